"""Offline multi-task RL with data sharing: `none` vs `all` vs `cds` on a dataset of unequal quality.

    python benchmarks/offline_sharing.py [--out DIR] [--updates N] [--episodes E] [--seed S] [train.py overrides ...]

1. Collects (once; an existing file is reused) a 3-task Meta-World dataset under the Meta-World+ goal
   set (50 goals per task, a random goal per episode) with 150-step episodes: reach-v3 and
   pick-place-v3 from the scripted experts with action noise 0.1 (expert data), push-v3 with noise 1.0
   and half of the actions uniform random (poor data); `--episodes` episodes per task.
2. Trains multi-task CQL (2 x 128 networks, batch 64 own + 64 candidate transitions per task, 4
   sampled actions per kind in the CQL penalty, CDS at the 50th percentile) with sharing=none, all and
   cds: same seed, networks, updates and evaluation.
3. Evaluates each run at the end (and every `--eval-every` updates) on all 50 goals of every task (150-step episodes) and
   writes per-task success, the sharing statistics and the wall-clock time to <out>/results.json.

Defaults took 9 minutes on 2 (shared) CPU cores; the measured output is in docs/offline.md. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

import mtrl.config  # noqa: F401  (registers the run-directory resolver)
from mtrl.data.collect import collect
from mtrl.data.dataset import load_dataset
from mtrl.data.summary import format_table, task_rows
from mtrl.offline_trainer import OfflineTrainer

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["reach-v3", "push-v3", "pick-place-v3"]
QUALITY = "per_task={push-v3:{noise:1.0,random_fraction:0.5}}"  # the others: expert + noise 0.1
MODES = ("none", "all", "cds")


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def collect_dataset(path: Path, episodes: int, seed: int, protocol: str) -> Path:
    if path.is_file():
        load_dataset(path, with_state=False)  # validate; a damaged file ends here with a one-line error
        return path
    cfg = _compose("collect", [f"env.tasks=[{','.join(TASKS)}]", f"env.protocol={protocol}", "env.horizon=150",
                               f"episodes_per_task={episodes}", "noise=0.1", QUALITY, f"seed={seed}",
                               f"output={path}"])
    return collect(cfg)


def train_overrides(dataset: Path, updates: int, seed: int, eval_every: int, protocol: str) -> list[str]:
    return [
        "mode=offline", f"dataset={dataset}",
        f"env.tasks=[{','.join(TASKS)}]", f"env.protocol={protocol}", "env.horizon=150",
        "agent.hidden_sizes=[128,128]", "batch_size_per_task=64", "offline.shared_per_task=64",
        "offline.cql_alpha=1.0", "offline.cql_num_actions=4", "offline.cds_percentile=50",
        f"total_steps={updates}", f"eval_every={eval_every}", f"checkpoint_every={updates}",
        f"eval_episodes={50 if protocol == 'metaworld' else 1}",
        f"log_every={max(1, updates // 20)}", f"seed={seed}", "torch_threads=1", "device=cpu",
    ]


def _tb_means(run_dir: Path, prefix: str, tasks: list[str]) -> dict[str, float] | None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    if f"{prefix}/{tasks[0]}" not in tags:
        return None
    return {t: float(np.mean([e.value for e in events.Scalars(f"{prefix}/{t}")])) for t in tasks}


def run_mode(mode: str, out: Path, overrides: list[str]) -> dict:
    run_dir = out / f"run_{mode}"
    cfg = _compose("train", [*overrides, f"sharing={mode}", f"run_dir={run_dir}"])
    start = time.perf_counter()
    result = OfflineTrainer(cfg, run_dir).run()
    wall = time.perf_counter() - start
    curve = []
    for path in sorted((run_dir / "eval").glob("step_*.json")):
        data = json.loads(path.read_text())
        curve.append({"updates": int(path.stem.split("_")[1]), "mean_success": data["mean_success"],
                      "success": {t["task"]: t["success_rate"] for t in data["tasks"]}})
    return {"success": {t.task: t.success_rate for t in result.tasks}, "mean_success": result.mean_success,
            "mean_return": {t.task: t.mean_return for t in result.tasks}, "curve": curve,
            "shared_fraction_mean": _tb_means(run_dir, "sharing/fraction", TASKS),
            "q_threshold_mean": _tb_means(run_dir, "sharing/threshold", TASKS),
            "wall_clock_s": round(wall, 1), "run_dir": str(run_dir)}


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/offline_sharing", help="output directory")
    parser.add_argument("--updates", type=int, default=3000, help="gradient updates per sharing mode")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task in the dataset")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--protocol", default="metaworld", choices=["metaworld", "mtrl"],
                        help="metaworld: 50 goals per task; mtrl: one fixed goal per task")
    parser.add_argument("--eval-every", type=int, default=0, help="updates between evaluations (0 = only at the end)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated sharing modes")
    args, extra = parser.parse_known_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    start = time.perf_counter()
    dataset_path = collect_dataset(out / f"dataset_{args.protocol}_e{args.episodes}_s{args.seed}.h5", args.episodes,
                                   args.seed, args.protocol)
    dataset = load_dataset(dataset_path, with_state=False)
    print(format_table(dataset), flush=True)
    overrides = train_overrides(dataset_path, args.updates, args.seed, args.eval_every, args.protocol) + extra
    report = {
        "command": "python benchmarks/offline_sharing.py " + " ".join(argv),
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "torch_threads": 1, "python": platform.python_version()},
        "dataset": {"path": str(dataset_path), "tasks": task_rows(dataset)},
        "train_overrides": overrides,
        "results": {},
    }
    for mode in args.modes.split(","):
        report["results"][mode] = run_mode(mode, out, overrides)
        (out / "results.json").write_text(json.dumps(report, indent=2))
        print(f"{mode}: mean success {report['results'][mode]['mean_success']:.3f} "
              f"{report['results'][mode]['success']}", flush=True)
    report["wall_clock_s"] = round(time.perf_counter() - start, 1)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    final = main(sys.argv[1:])
    print(json.dumps({m: {"mean_success": r["mean_success"], "success": r["success"]}
                      for m, r in final["results"].items()}, indent=2))
