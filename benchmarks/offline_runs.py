"""Shared pieces of the offline benchmarks (offline_hold.py, offline_sharing.py): collect a dataset once, train
runs one at a time as `python train.py ...` would, reuse a finished run with the same configuration, and read a
run's evaluations.

A benchmark that is interrupted (or rerun with more seeds) continues where it stopped: a run directory that holds
a finished run (checkpoint and evaluation at total_steps) whose config.yaml agrees with the configuration asked
for is reused, not trained again; its wall time is then read from the run's own files.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra import compose, initialize_config_dir

import mtrl.config  # noqa: F401  (registers the run-directory resolver)
from mtrl.config.parse import parse_collect, parse_train
from mtrl.data.collect import collect
from mtrl.data.dataset import load_dataset
from mtrl.data.summary import format_table, task_rows
from mtrl.train.sweep import is_finished

ROOT = Path(__file__).resolve().parents[1]
#: Config keys that do not change what a run computes (ignored when deciding whether a finished run is reusable;
#: the dataset is compared by its id, so the same file under another path still matches).
IDENTITY_KEYS = ("run_dir", "resume", "overwrite", "progress", "dataset")


def compose_config(name: str, overrides: list[str]):
    """configs/<name>.yaml composed with Hydra overrides, as the entry points compose it."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def dataset(path: Path, overrides: list[str]) -> dict[str, Any]:
    """Collect the dataset (`python collect.py <overrides> output=<path>`) unless the file exists; its summary."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        collect(parse_collect(compose_config("collect", [*overrides, f"output={path}", "progress=false"])))
    data = load_dataset(path, with_state=False)  # validates an existing file (one-line error when damaged)
    print(format_table(data), flush=True)
    return {
        "path": str(path),
        "command": "python collect.py " + " ".join([*overrides, f"output={path}"]),
        "tasks": task_rows(data),
    }


def run_overrides(data: Path, tasks: list[str], env: list[str], seed: int, updates: int, evals: int) -> list[str]:
    """The train.py overrides every benchmark run shares: the dataset and its tasks (`env`: protocol, horizon),
    `updates` updates evaluated `evals` times, logged 20 times and checkpointed twice, the seed, one CPU thread."""
    return [
        "mode=offline",
        f"dataset={data}",
        f"env.tasks=[{','.join(tasks)}]",
        *env,
        f"total_steps={updates}",
        f"eval_every={updates // evals}",
        f"log_every={max(1, updates // 20)}",
        f"checkpoint_every={max(1, updates // 2)}",
        f"seed={seed}",
        "torch_threads=1",
        "device=cpu",
    ]


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def reusable(run_dir: Path, overrides: list[str]) -> bool:
    """Whether run_dir holds a finished run on the same dataset (by id) whose settings equal those the overrides
    give (on the keys both configs know)."""
    if not is_finished(run_dir):
        return False
    config = parse_train(compose_config("train", [*overrides, f"run_dir={run_dir}"]))
    wanted = _flat(config.raw)
    saved = _flat(yaml.safe_load((run_dir / "config.yaml").read_text()))
    same_data = (
        json.loads((run_dir / "env.json").read_text())["dataset"]["dataset_id"]
        == load_dataset(config.offline.dataset, with_state=False).dataset_id
    )
    return same_data and all(wanted[k] == saved[k] for k in set(wanted) & set(saved) if k not in IDENTITY_KEYS)


def file_seconds(run_dir: Path) -> float:
    """A finished run's wall time from its files: config.yaml (written at the start) to its last evaluation."""
    last = max((run_dir / "eval").glob("step_*.json"), key=lambda p: p.stat().st_mtime)
    return last.stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime


def train(run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Train one run with `python train.py <overrides> run_dir=<run_dir>` (one thread), or reuse a finished one."""
    command = [sys.executable, str(ROOT / "train.py"), *overrides, f"run_dir={run_dir}", "progress=false"]
    shown = "python train.py " + " ".join(command[2:])
    if reusable(run_dir, overrides):
        print(f"reusing the finished run {run_dir}", flush=True)
        return {
            "run_dir": str(run_dir),
            "command": shown,
            "reused": True,
            "wall_clock_s": round(file_seconds(run_dir), 1),
        }
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    with open(run_dir.with_name(run_dir.name + ".log"), "w") as log:
        proc = subprocess.run([*command, "overwrite=true"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"error: {shown} failed (exit {proc.returncode}); see {log.name}")
    print(f"trained {run_dir} in {wall:.0f} s", flush=True)
    return {"run_dir": str(run_dir), "command": shown, "reused": False, "wall_clock_s": round(wall, 1)}


def evaluations(run_dir: Path) -> list[dict[str, Any]]:
    """The run's evaluations in step order: step, mean success, per-task success and mean return."""
    out = []
    for path in sorted((run_dir / "eval").glob("step_*.json")):
        data = json.loads(path.read_text())
        out.append(
            {
                "step": int(path.stem.split("_")[1]),
                "mean_success": data["mean_success"],
                "success": {t["task"]: t["success_rate"] for t in data["tasks"]},
                "mean_return": {t["task"]: t["mean_return"] for t in data["tasks"]},
            }
        )
    return out


def best_step(run_dir: Path) -> int:
    """The step of the evaluation whose weights the run kept in checkpoints/best.pt."""
    return int(torch.load(run_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)["step"])


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": 1,
        "python": platform.python_version(),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
