"""Offline multi-task RL with data sharing on data of unequal quality: sharing=none|all|cds|cds_zero, and BC.

    python benchmarks/offline_sharing.py [--out DIR] [--seeds 1,2,3] [--methods none,all,cds,cds_zero,bc]
                                         [--updates N] [--evals E] [--episodes 20] [train.py overrides ...]

1. Collects (once; an existing file is reused) the mixed-quality 3-task dataset under the Meta-World+ goal set
   (50 goals per task, a random one per episode) with 150-step episodes, `--episodes` per task: reach-v3 and
   pick-place-v3 from the scripted experts with action noise 0.1 (expert data), push-v3 with noise 1.0 and half
   of the actions uniform random (poor data).
2. Trains, one run at a time with one thread, multi-task CQL with the default options under each sharing mode,
   and behaviour cloning (agent=bc, its own data only), for `--seeds` seeds, every run with the same networks,
   batch, updates and evaluation schedule (SETTINGS below; extra arguments are train.py overrides for every run).
3. Evaluates every updates/evals updates on all 50 goals of every task (150-step episodes, deterministic
   actions) and aggregates with `python -m mtrl.report`: IQM and mean success over tasks with 95% stratified
   bootstrap CIs over seeds, final and best, per-task tables, learning curves (<out>/report/).
4. Writes <out>/sharing.json: per method the report's estimates, per-seed final and best success, per-task final
   success, the mean shared fraction and CDS threshold per task, and wall times.

A finished run with the same settings in <out>/runs is reused (offline_runs.py), so an interrupted study
continues where it stopped and more seeds can be added later.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
from offline_runs import best_step, dataset, evaluations, machine, run_overrides, train, write_json

from mtrl.report.runs import read_scalars

TASKS = ["reach-v3", "push-v3", "pick-place-v3"]
QUALITY = "per_task={push-v3:{noise:1.0,random_fraction:0.5}}"  # the others: expert + noise 0.1
METHODS = ("none", "all", "cds", "cds_zero", "bc")  # sharing modes of CQL, then behaviour cloning
#: Networks and batch of every run: 2 x 128 networks, 64 own transitions per task and batch, plus (all, cds,
#: cds_zero) 64 candidate transitions from the other tasks. With 2 x 256 networks and 128 + 128 transitions a CDS
#: update costs about 6 times as much on one thread (0.56 s against 0.095 s, measured with 10 penalty actions),
#: which would not fit the study in one sitting.
SETTINGS = ["agent.hidden_sizes=[128,128]", "batch_size_per_task=64", "offline.shared_per_task=64"]


def collect_overrides(episodes: int) -> list[str]:
    return [
        f"env.tasks=[{','.join(TASKS)}]",
        "env.protocol=metaworld",
        "env.horizon=150",
        f"episodes_per_task={episodes}",
        "noise=0.1",
        QUALITY,
    ]


def train_overrides(method: str, data: Path, seed: int, updates: int, evals: int) -> list[str]:
    agent = ["agent=bc", "sharing=none"] if method == "bc" else [f"sharing={method}"]
    env = ["env.protocol=metaworld", "env.horizon=150"]
    return [*run_overrides(data, TASKS, env, seed, updates, evals), *agent, *SETTINGS]


def tb_means(run_dir: Path, prefix: str) -> dict[str, float] | None:
    """Per task, the mean over the run of a TensorBoard scalar `<prefix>/<task>` (None if it was not logged)."""
    scalars = read_scalars(run_dir / "tb", [re.compile(f"^{re.escape(prefix)}/")])
    if f"{prefix}/{TASKS[0]}" not in scalars:
        return None
    return {t: float(np.mean([v for _, v in scalars[f"{prefix}/{t}"]])) for t in TASKS}


def run_summary(run_dir: Path) -> dict:
    evals = evaluations(run_dir)
    best = best_step(run_dir)
    at_best = next(e for e in evals if e["step"] == best)
    return {
        "steps": [e["step"] for e in evals],
        "mean_success": [e["mean_success"] for e in evals],
        "final_success": evals[-1]["mean_success"],
        "final_success_per_task": evals[-1]["success"],
        "best_step": best,
        "best_success": at_best["mean_success"],
        "shared_fraction": tb_means(run_dir, "sharing/fraction"),
        "cds_threshold": tb_means(run_dir, "sharing/threshold"),
    }


def method_summary(group, runs: dict) -> dict:
    """The report's estimates for one method plus what the runs logged."""

    def estimate(e) -> dict:
        return {"value": e.value, "ci": [e.low, e.high]}

    return {
        "label": group.label,
        "seeds": group.seeds,
        "final_step": group.final_step,
        "final_mean": estimate(group.final_mean),
        "final_iqm": estimate(group.final_iqm),
        "best_mean": estimate(group.best_mean),
        "best_iqm": estimate(group.best_iqm),
        "final_per_task": {t: float(group.final_scores[:, j].mean()) for j, t in enumerate(group.tasks)},
        "runs": runs,
    }


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/offline_sharing", help="output directory")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated: none, all, cds, cds_zero, bc")
    parser.add_argument("--updates", type=int, default=10_000, help="gradient updates per run")
    parser.add_argument("--evals", type=int, default=5, help="evaluations per run (every updates/evals updates)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task in the dataset")
    args, extra = parser.parse_known_args(argv)
    methods = args.methods.split(",")
    if unknown := [m for m in methods if m not in METHODS]:
        parser.error(f"--methods {','.join(unknown)} is not allowed; expected some of {','.join(METHODS)}")
    if args.updates % args.evals:
        parser.error(f"--updates {args.updates} is not a multiple of --evals {args.evals}")
    from mtrl.report import write_report

    out = Path(args.out)
    start = time.perf_counter()
    data_path = out / f"mixed_metaworld_e{args.episodes}.h5"
    report = {
        "command": "python benchmarks/offline_sharing.py " + " ".join(argv),
        "machine": machine(),
        "dataset": dataset(data_path, collect_overrides(args.episodes)),
        "runs": {},
    }
    for method in methods:
        for seed in [int(s) for s in args.seeds.split(",")]:
            run_dir = out / "runs" / f"{method}_s{seed}"
            overrides = train_overrides(method, data_path, seed, args.updates, args.evals) + extra
            report["runs"].setdefault(method, {})[str(seed)] = {**train(run_dir, overrides), **run_summary(run_dir)}
            write_json(out / "sharing.json", report)
    aggregate = write_report(
        [out / "runs" / f"{m}_s{s}" for m in methods for s in args.seeds.split(",")],
        out / "report",
        group_by=["agent.name", "sharing"],
    )
    by_label = {g.label: g for g in aggregate.groups}
    report["methods"] = {}
    for method in methods:
        label = "agent=bc,sharing=none" if method == "bc" else f"agent=cql,sharing={method}"
        report["methods"][method] = method_summary(by_label[label], report["runs"][method])
    report["report"] = {name: str(path) for name, path in aggregate.files.items()}
    report["wall_clock_s"] = round(time.perf_counter() - start, 1)
    write_json(out / "sharing.json", report)
    print(aggregate.markdown)
    return report


if __name__ == "__main__":
    final = main(sys.argv[1:])
    print(
        json.dumps(
            {
                m: {"final_iqm": r["final_iqm"], "final_mean": r["final_mean"], "best_mean": r["best_mean"]}
                for m, r in final["methods"].items()
            },
            indent=2,
        )
    )
    print(f"wall clock {final['wall_clock_s']:.0f} s; report in {final['report']['markdown']}")
