"""Does the default offline configuration hold its success when trained for longer? (issue #14)

    python benchmarks/offline_hold.py [--out DIR] [--seeds 1,2,3] [--agents cql,bc] [--updates 10000] [--evals 10]
                                      [train.py overrides ...]

1. Collects (once; an existing file is reused) the three-task expert dataset with the project's own command:
   `python collect.py env.tasks=[reach-v3,drawer-close-v3,button-press-topdown-v3] env.protocol=mtrl
   episodes_per_task=25 noise=0.1` (Meta-World's scripted experts plus Gaussian action noise 0.1).
2. Trains, one run at a time with one thread, the default offline agent (`mode=offline`, i.e. agent=cql with all
   its default options, observations standardised by the dataset's statistics) and `agent=bc`, each for
   `--updates` gradient updates per seed, with 2 x 256 networks and 64 transitions per task and batch, evaluating
   `--evals` times (every updates/evals updates; mtrl protocol: one deterministic 150-step episode per task).
3. Prints and writes `<out>/hold.json`: per agent and seed the mean success over tasks of every evaluation,
   its mean over the last half of the evaluations (the last 5 of 10), per task the same, the best evaluation's
   step (checkpoints/best.pt), and wall times; per agent whether every seed holds >= 0.9.

Extra arguments are train.py overrides applied to every run (e.g. `agent.cql_alpha=1` to see the collapse).
A finished run with the same settings in <out> is reused (see offline_runs.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from offline_runs import best_step, dataset, evaluations, machine, run_overrides, train, write_json

TASKS = ["reach-v3", "drawer-close-v3", "button-press-topdown-v3"]
THRESHOLD = 0.9  # the success the default configuration must hold


def collect_overrides(episodes: int) -> list[str]:
    return [f"env.tasks=[{','.join(TASKS)}]", "env.protocol=mtrl", f"episodes_per_task={episodes}", "noise=0.1"]


def train_overrides(agent: str, data: Path, seed: int, updates: int, evals: int) -> list[str]:
    return [
        *run_overrides(data, TASKS, ["env.protocol=mtrl"], seed, updates, evals),
        *([] if agent == "cql" else [f"agent={agent}"]),
        "agent.hidden_sizes=[256,256]",
        "batch_size_per_task=64",
    ]


def summarize_run(run_dir: Path, late: int) -> dict:
    """Mean success over tasks per evaluation, and over the last `late` evaluations (overall and per task)."""
    evals = evaluations(run_dir)
    tail = evals[-late:]
    return {
        "steps": [e["step"] for e in evals],
        "mean_success": [e["mean_success"] for e in evals],
        "late_mean_success": float(np.mean([e["mean_success"] for e in tail])),
        "late_success_per_task": {t: float(np.mean([e["success"][t] for e in tail])) for t in TASKS},
        "late_return_per_task": {t: float(np.mean([e["mean_return"][t] for e in tail])) for t in TASKS},
        "final_success": evals[-1]["mean_success"],
        "best_step": best_step(run_dir),
    }


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/offline_hold", help="output directory")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    parser.add_argument("--agents", default="cql,bc", help="comma-separated: cql (the offline default), bc")
    parser.add_argument("--updates", type=int, default=10_000, help="gradient updates per run")
    parser.add_argument("--evals", type=int, default=10, help="evaluations per run (every updates/evals updates)")
    parser.add_argument("--episodes", type=int, default=25, help="episodes per task in the dataset")
    args, extra = parser.parse_known_args(argv)
    if args.updates % args.evals:
        parser.error(f"--updates {args.updates} is not a multiple of --evals {args.evals}")
    out, late = Path(args.out), max(1, args.evals // 2)
    start = time.perf_counter()
    data_path = out / f"expert3_e{args.episodes}.h5"
    report = {
        "command": "python benchmarks/offline_hold.py " + " ".join(argv),
        "machine": machine(),
        "dataset": dataset(data_path, collect_overrides(args.episodes)),
        "late_evaluations": late,
        "threshold": THRESHOLD,
        "runs": {},
        "summary": {},
    }
    for agent in args.agents.split(","):
        runs = report["runs"].setdefault(agent, {})
        for seed in [int(s) for s in args.seeds.split(",")]:
            run_dir = out / f"{agent}_s{seed}"
            runs[str(seed)] = {
                **train(run_dir, train_overrides(agent, data_path, seed, args.updates, args.evals) + extra),
                **summarize_run(run_dir, late),
            }
            write_json(out / "hold.json", report)
        late_means = [r["late_mean_success"] for r in runs.values()]
        report["summary"][agent] = {
            "late_mean_success_per_seed": late_means,
            "mean": float(np.mean(late_means)),
            "min": float(np.min(late_means)),
            "holds": bool(min(late_means) >= THRESHOLD),
            "late_success_per_task": {
                t: float(np.mean([r["late_success_per_task"][t] for r in runs.values()])) for t in TASKS
            },
            "wall_clock_s_per_run": [r["wall_clock_s"] for r in runs.values()],
        }
    report["wall_clock_s"] = round(time.perf_counter() - start, 1)
    write_json(out / "hold.json", report)
    return report


if __name__ == "__main__":
    final = main(sys.argv[1:])
    print(json.dumps({"summary": final["summary"], "wall_clock_s": final["wall_clock_s"]}, indent=2))
