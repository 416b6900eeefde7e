"""The report's figures (matplotlib, no display needed): learning curves, per-task heat map, balancer weights."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mtrl.report.stats import STEP_UNITS, GroupStats

DPI = 130


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt

    return plt


def _colours(n: int) -> list:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def step_axis_label(groups: Sequence[GroupStats]) -> str:
    """What the x axis counts: environment steps (online runs), gradient updates (offline runs), or both."""
    units = {g.step_unit for g in groups}
    if units == {STEP_UNITS["online"]}:
        return "environment steps (summed over tasks)"
    if len(units) == 1:
        return units.pop()
    return "steps (environment steps for online runs, gradient updates for offline runs)"


def learning_curves(groups: Sequence[GroupStats], path: Path) -> Path:
    """Mean evaluation success over tasks vs steps (env steps or updates) per group, with the 95% bootstrap CI
    band over seeds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for g, colour in zip(groups, _colours(len(groups))):
        label = f"{g.label} (n={len(g.runs)})"
        marker = "o" if len(g.curve_steps) < 25 else None
        ax.plot(g.curve_steps, g.curve_mean, color=colour, label=label, marker=marker, markersize=3)
        if len(g.runs) > 1:
            ax.fill_between(g.curve_steps, g.curve_low, g.curve_high, color=colour, alpha=0.2, linewidth=0)
    ax.set_xlabel(step_axis_label(groups))
    ax.set_ylabel("mean success over tasks")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Evaluation success: mean over seeds, 95% bootstrap CI over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Path(path)


def per_task_heatmap(groups: Sequence[GroupStats], path: Path) -> Path:
    """Final per-task success (mean over seeds): one row per group, one column per task."""
    plt = _pyplot()
    tasks: list[str] = []
    for g in groups:
        tasks += [t for t in g.tasks if t not in tasks]
    grid = np.full((len(groups), len(tasks)), np.nan)
    for i, g in enumerate(groups):
        for j, task in enumerate(g.tasks):
            grid[i, tasks.index(task)] = g.final_scores[:, j].mean()
    longest = max(len(g.label) for g in groups)
    width = min(30.0, 4.5 + 0.45 * len(tasks) + 0.07 * longest)
    height = 2.4 + 0.45 * len(groups) + 0.05 * max(len(t) for t in tasks)
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(np.ma.masked_invalid(grid), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(tasks)), tasks, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(groups)), [g.label for g in groups], fontsize=8)
    if grid.size <= 400:
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if value > 0.6 else "white",
                )
    bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    bar.set_label("success", fontsize=8)
    ax.set_title("Per-task success at the final step (mean over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Path(path)


def _mean_weights(g: GroupStats, net: str) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """Steps logged by every seed and the mean weight over seeds per task, for one network of a group."""
    series = [run.weights.get(net, {}) for run in g.runs]
    if not all(series):
        series = [s for s in series if s]
    if not series:
        return None
    steps = sorted(set.intersection(*(set(step for step, _ in s[g.tasks[0]]) for s in series if g.tasks[0] in s)))
    if not steps:
        return None
    out = {}
    for task in g.tasks:
        rows = []
        for s in series:
            if task in s:
                values = dict(s[task])
                rows.append([values[step] for step in steps])
        if rows:
            out[task] = np.mean(rows, axis=0)
    return np.array(steps), out


def weighted_groups(groups: Sequence[GroupStats]) -> list[tuple[GroupStats, list[str]]]:
    """Groups whose logged task weights change (balancer runs), with their networks; uniform weights left out."""
    chosen = []
    for g in groups:
        nets = sorted(set().union(*(run.weights for run in g.runs)))
        varying = []
        for net in nets:
            values = [v for run in g.runs for series in run.weights.get(net, {}).values() for _, v in series]
            if values and np.ptp(values) > 1e-6:
                varying.append(net)
        if varying:
            chosen.append((g, varying))
    return chosen


def balancer_weights(groups: Sequence[GroupStats], path: Path) -> Path | None:
    """Task weights over time (TensorBoard balancer/<net>/weight/<task>, mean over seeds); None if none vary."""
    chosen = weighted_groups(groups)
    if not chosen:
        return None
    plt = _pyplot()
    columns = max(len(nets) for _, nets in chosen)
    fig, axes = plt.subplots(len(chosen), columns, figsize=(5.5 * columns, 3.2 * len(chosen)), squeeze=False)
    for row, (g, nets) in enumerate(chosen):
        colours = _colours(len(g.tasks))
        for col in range(columns):
            ax = axes[row][col]
            if col >= len(nets):
                ax.axis("off")
                continue
            found = _mean_weights(g, nets[col])
            if found is None:
                ax.axis("off")
                continue
            steps, weights = found
            for task, colour in zip(g.tasks, colours):
                if task in weights:
                    ax.plot(steps, weights[task], color=colour, label=task, linewidth=1.2)
            ax.set_title(f"{g.label}: {nets[col]} (mean over {len(g.runs)} seeds)", fontsize=9)
            ax.set_xlabel(g.step_unit)
            ax.set_ylabel("task weight")
            ax.grid(alpha=0.3)
            if len(g.tasks) <= 12:
                ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Path(path)


def pareto_groups(groups: Sequence[GroupStats]) -> list[tuple[object, GroupStats]]:
    """(preference, group) of the Pareto MTL groups (all runs balancer=paretomtl), by preference; [] if < 2."""
    found = []
    for g in groups:
        prefs = {run.config.get("balancer.preference") for run in g.runs}
        if (
            all(run.config.get("balancer.name") == "paretomtl" for run in g.runs)
            and len(prefs) == 1
            and None not in prefs
        ):
            found.append((prefs.pop(), g))
    found.sort(key=lambda item: (isinstance(item[0], tuple), item[0]))
    return found if len({str(p) for p, _ in found}) >= 2 else []


def pareto_front(groups: Sequence[GroupStats], path: Path) -> Path | None:
    """Final per-task success of each Pareto MTL preference (mean over seeds); None without a preference sweep.

    2-3 tasks: scatter of one task's success against another's (every pair), the preferences joined in order
    and labelled, other methods on the same tasks as grey reference points. More tasks: the per-task heat map
    of the preference groups.
    """
    front = pareto_groups(groups)
    if not front:
        return None
    tasks = front[0][1].tasks
    front = [(p, g) for p, g in front if g.tasks == tasks]
    if len(tasks) > 3 or len(tasks) < 2:
        return per_task_heatmap([g for _, g in front], path)
    others = [g for g in groups if g.tasks == tasks and all(g is not f for _, f in front)]
    pairs = [(0, 1)] if len(tasks) == 2 else [(0, 1), (0, 2), (1, 2)]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.0 * len(pairs), 4.6), squeeze=False)
    for ax, (a, b) in zip(axes[0], pairs):
        x = np.array([g.final_scores[:, a].mean() for _, g in front])
        y = np.array([g.final_scores[:, b].mean() for _, g in front])
        ax.plot(x, y, "-o", color="tab:blue", label="paretomtl (preference)")
        for (pref, _), xi, yi in zip(front, x, y):
            ax.annotate(_show_preference(pref), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        for g, marker in zip(others, "xs^vD<>p*h"):
            ax.scatter(
                g.final_scores[:, a].mean(), g.final_scores[:, b].mean(), color="grey", marker=marker, label=g.label
            )
        ax.set_xlabel(f"success: {tasks[a]}")
        ax.set_ylabel(f"success: {tasks[b]}")
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle("Pareto MTL: final per-task success per preference (mean over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Path(path)


def _show_preference(pref: object) -> str:
    return "[" + ",".join(f"{v:g}" for v in pref) + "]" if isinstance(pref, tuple) else str(pref)
