"""The report's tables: a Markdown document and CSV files (summary, per task, per run)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from mtrl.report.stats import STEP_UNITS, GroupStats

DEFINITIONS = """\
Scores are evaluation success rates, one per (seed, task).
**final**: each seed's evaluation at the group's final step (the last step every seed evaluated).
**best**: each seed's evaluation, up to the final step, with the highest mean success over tasks, ties broken by
the higher mean return where measured, then the earlier step: the evaluation whose weights a run keeps in
checkpoints/best.pt (the best-so-far number some published tables report; optimistic).
**mean**: mean over seeds and tasks. **IQM**: interquartile mean (25%-trimmed mean of all seed-task scores).
[low, high]: 95% stratified bootstrap confidence interval over seeds (rliable, {reps} resamples); none with one seed.
Steps are environment steps summed over tasks (online runs) or gradient updates (offline runs)."""


def _seeds(stats: GroupStats) -> str:
    return f"{len(stats.runs)} ({', '.join(map(str, stats.seeds))})"


def summary_rows(groups: Sequence[GroupStats]) -> list[dict]:
    rows = []
    for g in groups:
        row = {
            "method": g.label,
            "seeds": len(g.runs),
            "seed_list": " ".join(map(str, g.seeds)),
            "final_step": g.final_step,
            "step_unit": g.step_unit,
            "protocol": g.protocol,
        }
        for name, est in (
            ("final_mean", g.final_mean),
            ("final_iqm", g.final_iqm),
            ("best_mean", g.best_mean),
            ("best_iqm", g.best_iqm),
        ):
            row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = est.value, est.low, est.high
        row["notes"] = "; ".join(g.notes)
        rows.append(row)
    return rows


def per_task_rows(groups: Sequence[GroupStats]) -> list[dict]:
    rows = []
    for g in groups:
        for j, task in enumerate(g.tasks):
            final, best = g.final_scores[:, j], g.best_scores[:, j]
            rows.append(
                {
                    "method": g.label,
                    "task": task,
                    "seeds": len(g.runs),
                    "final_mean": float(final.mean()),
                    "final_std": float(final.std()),
                    "best_mean": float(best.mean()),
                    "best_std": float(best.std()),
                }
            )
    return rows


def _shown(path: Path) -> str:
    """A run directory relative to the working directory when it lies below it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run_rows(groups: Sequence[GroupStats]) -> list[dict]:
    rows = []
    for g in groups:
        for i, run in enumerate(g.runs):
            rows.append(
                {
                    "method": g.label,
                    "seed": run.seed,
                    "run_dir": _shown(run.path),
                    "finished": run.finished,
                    "last_step": run.steps[-1],
                    "final_step": g.final_step,
                    "final_mean_success": float(g.final_scores[i].mean()),
                    "best_step": g.best_steps[i],
                    "best_mean_success": float(g.best_scores[i].mean()),
                    "eval_source": run.eval_source,
                }
            )
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with Path(path).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _step(g: GroupStats, step: int) -> str:
    """A step count, with its unit for offline runs (gradient updates): `10,000` or `10,000 updates`."""
    return f"{step:,} updates" if g.step_unit == STEP_UNITS["offline"] else f"{step:,}"


def summary_markdown(groups: Sequence[GroupStats]) -> str:
    header = [
        "method",
        "seeds",
        "final step",
        "final mean [95% CI]",
        "final IQM [95% CI]",
        "best mean [95% CI]",
        "best IQM [95% CI]",
        "best steps",
    ]
    rows = [
        [
            g.label,
            _seeds(g),
            _step(g, g.final_step),
            g.final_mean.fmt(),
            g.final_iqm.fmt(),
            g.best_mean.fmt(),
            g.best_iqm.fmt(),
            ", ".join(f"{s:,}" for s in g.best_steps),
        ]
        for g in groups
    ]
    return _table(header, rows)


def per_task_markdown(groups: Sequence[GroupStats], which: str = "final") -> str:
    tasks: list[str] = []
    for g in groups:
        tasks += [t for t in g.tasks if t not in tasks]
    header = ["task"] + [g.label for g in groups]
    rows = []
    for task in tasks:
        row = [task]
        for g in groups:
            if task in g.tasks:
                scores = (g.final_scores if which == "final" else g.best_scores)[:, g.tasks.index(task)]
                row.append(f"{scores.mean():.2f} ± {scores.std():.2f}" if len(scores) > 1 else f"{scores.mean():.2f}")
            else:
                row.append("")
        rows.append(row)
    means = ["**mean**"] + [f"**{(g.final_mean if which == 'final' else g.best_mean).value:.3f}**" for g in groups]
    return _table(header, rows + [means])


def report_markdown(groups: Sequence[GroupStats], sources: Sequence[str], figures: dict[str, Path], reps: int) -> str:
    runs = sum(len(g.runs) for g in groups)
    protocols = sorted({g.protocol for g in groups if g.protocol})
    parts = [
        "# mtrl results report",
        "",
        f"{runs} runs in {len(groups)} group(s) from {', '.join(sources)}; evaluation protocol: "
        f"{', '.join(protocols) or 'unknown'}.",
        "",
        DEFINITIONS.format(reps=reps),
        "",
        "## Mean success over tasks",
        "",
        summary_markdown(groups),
    ]
    notes = [f"- {g.label}: {'; '.join(g.notes)}" for g in groups if g.notes]
    if notes:
        parts += ["", "Notes:", *notes]
    parts += [
        "",
        "## Per-task success, final (mean ± std over seeds)",
        "",
        per_task_markdown(groups, "final"),
        "",
        "## Per-task success, best (mean ± std over seeds)",
        "",
        per_task_markdown(groups, "best"),
    ]
    if figures:
        parts += ["", "## Figures", ""]
        parts += [f"![{name}]({path.name})" for name, path in figures.items()]
    return "\n".join(parts) + "\n"
