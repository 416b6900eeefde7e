"""Grouping runs by method/config and the statistics over seeds (rliable: IQM, stratified bootstrap CIs).

Scores are success rates, one per (seed, task). For a group of runs (one per seed):

- **final**: each seed's evaluation at the *final step*, the last step that every seed of the group evaluated
  (a finished sweep: total_steps);
- **best**: each seed's evaluation, among those up to the final step, with the highest mean success over
  tasks, ties broken by the higher mean return where returns were measured, then by the earlier step: the
  rule by which a run keeps `checkpoints/best.pt` (the "best-so-far" number some published tables report;
  optimistic, hence reported separately);
- steps are environment steps summed over tasks for online runs and gradient updates for offline runs
  (`mode=offline`); `GroupStats.step_unit` names them;
- **mean**: mean over seeds and tasks; **IQM**: interquartile mean, the 25%-trimmed mean of all (seed, task)
  scores (`rliable.metrics.aggregate_iqm`);
- **95% CI**: rliable's stratified percentile bootstrap over seeds (`rliable.library.get_interval_estimates`:
  seeds resampled with replacement within each task).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from mtrl.errors import UserError
from mtrl.report.runs import Run

# Keys that identify a run rather than a method: never used to tell groups apart automatically.
IGNORED_KEYS = {
    "seed",
    "run_dir",
    "resume",
    "progress",
    "device",
    "torch_threads",
    "env.goal_seed",
    "env.vectorization",
    "keep_checkpoints",
    "save_replay",
    "log_every",
    "checkpoint_every",
}
IGNORED_PREFIXES = ("sweep.", "hydra.")
FALLBACK_LABEL_KEYS = ("balancer.name", "encoder.name")
#: What a step counts, by run mode.
STEP_UNITS = {"online": "environment steps", "offline": "gradient updates"}
_MISSING = "<unset>"


@dataclass
class Estimate:
    """A point estimate with its 95% confidence interval."""

    value: float
    low: float
    high: float

    def fmt(self, digits: int = 3, ci: bool = True) -> str:
        if not ci or not np.isfinite(self.low):
            return f"{self.value:.{digits}f}"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass
class GroupStats:
    """Everything the tables and figures show for one group of runs."""

    label: str
    runs: list[Run]
    tasks: list[str]
    final_step: int
    final_scores: np.ndarray  # (seeds, tasks)
    best_scores: np.ndarray  # (seeds, tasks)
    best_steps: list[int]
    final_mean: Estimate
    final_iqm: Estimate
    best_mean: Estimate
    best_iqm: Estimate
    curve_steps: np.ndarray
    curve_mean: np.ndarray
    curve_low: np.ndarray
    curve_high: np.ndarray
    protocol: str | None = None
    notes: list[str] = field(default_factory=list)
    step_unit: str = STEP_UNITS["online"]

    @property
    def seeds(self) -> list[Any]:
        return [run.seed for run in self.runs]


def _canon(value: Any) -> Any:
    return value if value is not None else "null"


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(_show(v) for v in value) + "]"
    if value is None:
        return "null"
    return str(value)


def resolve_group_keys(runs: Sequence[Run], group_by: Sequence[str] | None) -> list[str]:
    """The config keys that tell groups apart: the given ones (checked) or, by default, the keys that differ.

    Automatic keys: every config key whose value differs between runs, except run identity (seed, paths,
    device, ...); when a component's name differs (`balancer.name`), its options (`balancer.c`, ...) go with it,
    except options that differ between runs of the same name (a `balancer.preference` sweep beside a baseline).
    Given keys may name a component (`balancer` means `balancer.name`).
    """
    all_keys = sorted(set().union(*(run.config for run in runs)))
    if group_by:
        keys = []
        for key in group_by:
            if key in all_keys:
                keys.append(key)
            elif f"{key}.name" in all_keys:
                keys.append(f"{key}.name")
            else:
                examples = ", ".join(
                    k
                    for k in (
                        "balancer",
                        "encoder",
                        "env.tasks",
                        "env.protocol",
                        "seed",
                        "total_steps",
                        "agent.hidden_sizes",
                    )
                    if k in all_keys or f"{k}.name" in all_keys
                )
                raise UserError(
                    f"unknown group key '{key}'; run configs have keys such as {examples} "
                    f"(dotted paths into config.yaml)"
                )
        return keys
    candidates = [k for k in all_keys if k not in IGNORED_KEYS and not k.startswith(IGNORED_PREFIXES)]
    varying = [k for k in candidates if len({_canon(run.config.get(k, _MISSING)) for run in runs}) > 1]
    named = {k[: -len(".name")] for k in varying if k.endswith(".name")}

    def goes_with_name(key: str, component: str) -> bool:
        values: dict[Any, set] = {}
        for run in runs:
            name = _canon(run.config.get(f"{component}.name", _MISSING))
            values.setdefault(name, set()).add(_canon(run.config.get(key, _MISSING)))
        return all(len(v) == 1 for v in values.values())

    return [
        k
        for k in varying
        if not any(k.startswith(f"{p}.") and k != f"{p}.name" and goes_with_name(k, p) for p in named)
    ]


def group_label(run: Run, keys: Sequence[str]) -> str:
    shown = keys or [k for k in FALLBACK_LABEL_KEYS if k in run.config]
    if not shown:
        return "all runs"
    components = [k[: -len("name")] for k in shown if k.endswith(".name")]
    parts = []
    for key in shown:
        if key not in run.config and not key.endswith(".name") and any(key.startswith(c) for c in components):
            continue  # an option that this run's component does not have (a baseline beside a sweep)
        name = key[: -len(".name")] if key.endswith(".name") else key
        parts.append(f"{name}={_show(run.config.get(key, _MISSING))}")
    return ",".join(parts)


def group_runs(runs: Sequence[Run], group_by: Sequence[str] | None = None) -> dict[str, list[Run]]:
    """Runs by group label, groups in label order, runs by seed."""
    keys = resolve_group_keys(runs, group_by)
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(group_label(run, keys), []).append(run)
    return {label: sorted(groups[label], key=lambda r: (str(r.seed), str(r.path))) for label in sorted(groups)}


def interval_estimates(scores: np.ndarray, reps: int, seed: int) -> tuple[Estimate, Estimate]:
    """(mean, IQM) of a (seeds, tasks) score matrix with rliable's 95% stratified bootstrap CIs."""
    from rliable import library as rly
    from rliable import metrics

    def aggregate(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_mean(x), metrics.aggregate_iqm(x)])

    if scores.shape[0] < 2:  # one seed: nothing to resample
        point = aggregate(scores)
        return Estimate(point[0], np.nan, np.nan), Estimate(point[1], np.nan, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch: "random_state is deprecated"
        points, cis = rly.get_interval_estimates(
            {"g": scores}, aggregate, reps=reps, confidence_interval_size=0.95, random_state=np.random.RandomState(seed)
        )
    point, ci = points["g"], cis["g"]
    return Estimate(float(point[0]), float(ci[0, 0]), float(ci[1, 0])), Estimate(
        float(point[1]), float(ci[0, 1]), float(ci[1, 1])
    )


def curve_estimates(scores: np.ndarray, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean success over seeds and tasks per step of a (seeds, tasks, steps) array, with 95% bootstrap CIs."""
    from rliable import library as rly

    def per_step(x: np.ndarray) -> np.ndarray:
        return x.mean(axis=(0, 1))

    mean = per_step(scores)
    if scores.shape[0] < 2:
        return mean, mean.copy(), mean.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        _, cis = rly.get_interval_estimates(
            {"g": scores}, per_step, reps=reps, confidence_interval_size=0.95, random_state=np.random.RandomState(seed)
        )
    return mean, cis["g"][0], cis["g"][1]


def common_steps(label: str, runs: Sequence[Run]) -> tuple[list[int], list[str]]:
    """The evaluation steps every run of a group has for all of the group's tasks, and notes on the group
    (shared seeds, unfinished runs, a final step earlier than some run's); one-line errors when the runs differ
    in their tasks or share no evaluation step."""
    tasks = runs[0].tasks
    for run in runs[1:]:
        if run.tasks != tasks:
            raise UserError(
                f"runs of group '{label}' were trained on different tasks ({runs[0].path}: {tasks}; "
                f"{run.path}: {run.tasks}); group them apart, e.g. --group-by env.tasks"
            )
    notes = []
    seeds = [run.seed for run in runs]
    if len(set(map(str, seeds))) < len(seeds):
        notes.append(f"several runs share a seed ({', '.join(map(str, seeds))})")
    unfinished = [run for run in runs if not run.finished]
    if unfinished:
        notes.append(f"{len(unfinished)} of {len(runs)} runs unfinished")
    common = sorted(set.intersection(*(set(s for s, e in run.evals.items() if set(tasks) <= set(e)) for run in runs)))
    if not common:
        raise UserError(
            f"the runs of group '{label}' have no evaluation step in common (steps: "
            + "; ".join(f"{run.path.name}: {run.steps}" for run in runs)
            + ")"
        )
    if any(run.steps[-1] > common[-1] for run in runs):
        notes.append(f"final step {common[-1]} is the last one every seed evaluated")
    return common, notes


def group_stats(label: str, runs: Sequence[Run], reps: int = 2000, seed: int = 0) -> GroupStats:
    """Final and best scores, their estimates, and the learning curve of one group."""
    runs = list(runs)
    tasks = runs[0].tasks
    common, notes = common_steps(label, runs)
    final_step = common[-1]

    def scores_at(run: Run, step: int) -> np.ndarray:
        return np.array([run.evals[step][t] for t in tasks], dtype=np.float64)

    cube = np.stack([np.stack([scores_at(run, step) for step in common], axis=-1) for run in runs])  # (S, T, steps)
    final_scores = cube[:, :, -1]
    best_index = [best_evaluation(run, common, tasks) for run in runs]
    best_scores = np.stack([cube[i, :, j] for i, j in enumerate(best_index)])
    final_mean, final_iqm = interval_estimates(final_scores, reps, seed)
    best_mean, best_iqm = interval_estimates(best_scores, reps, seed)
    curve_mean, curve_low, curve_high = curve_estimates(cube, reps, seed)
    protocols = {run.protocol for run in runs}
    if len(protocols) > 1:
        notes.append(f"mixed evaluation protocols {sorted(map(str, protocols))}")
    modes = {run.mode for run in runs}
    if len(modes) > 1:
        notes.append("mixed online and offline runs: steps are environment steps or gradient updates")
    unit = STEP_UNITS.get(modes.pop(), "steps") if len(modes) == 1 else "steps"
    return GroupStats(
        label,
        runs,
        tasks,
        final_step,
        final_scores,
        best_scores,
        [common[j] for j in best_index],
        final_mean,
        final_iqm,
        best_mean,
        best_iqm,
        np.array(common),
        curve_mean,
        curve_low,
        curve_high,
        protocol=",".join(sorted(map(str, protocols))),
        notes=notes,
        step_unit=unit,
    )


def best_evaluation(run: Run, steps: Sequence[int], tasks: Sequence[str]) -> int:
    """Index in `steps` of the run's best evaluation: highest mean success over `tasks`, then highest mean return
    (where measured), then the earliest; the rule `checkpoints/best.pt` is kept by."""

    def key(index: int) -> tuple[float, float, int]:
        step = steps[index]
        success = float(np.mean([run.evals[step][t] for t in tasks]))
        return success, run.returns.get(step, -np.inf), -index

    return max(range(len(steps)), key=key)


def summarize(
    runs: Sequence[Run], group_by: Sequence[str] | None = None, reps: int = 2000, seed: int = 0
) -> list[GroupStats]:
    """Statistics of every group of `runs`."""
    if not isinstance(reps, int) or reps < 100:
        raise UserError(f"reps={reps} is not allowed; expected an integer >= 100 bootstrap resamples")
    return [group_stats(label, members, reps, seed) for label, members in group_runs(runs, group_by).items()]
