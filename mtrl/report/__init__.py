"""Results over many runs: `python -m mtrl.report <run dirs or a sweep dir>`.

Reads every run's evaluation JSONs (`eval/step_<N>.json`) and TensorBoard log (`tb/`), groups runs by
method/config (the config keys that differ between runs, or `--group-by`), and writes per group the mean
success over tasks and its IQM with 95% stratified bootstrap CIs over seeds (rliable), final and best-so-far,
per-task success, and figures: learning curves, a per-task heat map, balancer task weights over time and, for a
Pareto MTL preference sweep, the per-task success of each preference (`plots.pareto_front`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mtrl.report.runs import Run, find_run_dirs, load_run, load_runs
from mtrl.report.stats import Estimate, GroupStats, group_runs, resolve_group_keys, summarize


@dataclass
class Report:
    """What `write_report` produced: the statistics and the files."""

    groups: list[GroupStats]
    markdown: str
    files: dict[str, Path]


def default_output(paths: Sequence[str | Path]) -> Path:
    """`<dir>/report` for one directory given, else `report` in the working directory."""
    return Path(paths[0]) / "report" if len(paths) == 1 else Path("report")


def write_report(
    paths: Sequence[str | Path],
    out: str | Path | None = None,
    group_by: Sequence[str] | None = None,
    reps: int = 2000,
    seed: int = 0,
    figures: bool = True,
) -> Report:
    """Load the runs under `paths`, compute the statistics and write report.md, CSVs and PNG figures to `out`."""
    from mtrl.report import plots, tables

    paths = list(paths)
    runs = load_runs(paths)
    groups = summarize(runs, group_by, reps, seed)
    out = Path(out) if out is not None else default_output(paths)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {
        "summary_csv": tables.write_csv(out / "summary.csv", tables.summary_rows(groups)),
        "per_task_csv": tables.write_csv(out / "per_task.csv", tables.per_task_rows(groups)),
        "runs_csv": tables.write_csv(out / "runs.csv", tables.run_rows(groups)),
    }
    shown: dict[str, Path] = {}
    if figures:
        shown["learning curves"] = plots.learning_curves(groups, out / "learning_curves.png")
        shown["per-task success"] = plots.per_task_heatmap(groups, out / "per_task_success.png")
        weights = plots.balancer_weights(groups, out / "balancer_weights.png")
        if weights is not None:
            shown["balancer task weights"] = weights
        pareto = plots.pareto_front(groups, out / "pareto_front.png")
        if pareto is not None:
            shown["pareto front"] = pareto
        files.update({name.replace(" ", "_").replace("-", "_"): path for name, path in shown.items()})
    markdown = tables.report_markdown(groups, [str(p) for p in paths], shown, reps)
    files["markdown"] = out / "report.md"
    files["markdown"].write_text(markdown)
    return Report(groups, markdown, files)


__all__ = [
    "Report",
    "write_report",
    "Run",
    "load_run",
    "load_runs",
    "find_run_dirs",
    "summarize",
    "group_runs",
    "resolve_group_keys",
    "GroupStats",
    "Estimate",
]
