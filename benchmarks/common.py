"""Shared pieces of the benchmark scripts: synthetic MT-sized replay data and interleaved update timing."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mtrl.train.replay import MultiTaskReplay

OBS_DIM, ACT_DIM = 39, 4


def filled_replay(num_tasks: int, per_task: int = 512, seed: int = 0) -> MultiTaskReplay:
    """A replay with `per_task` random transitions of Meta-World's shapes for each task."""
    rng = np.random.default_rng(seed)
    replay = MultiTaskReplay(num_tasks, per_task, OBS_DIM, ACT_DIM, seed=seed)
    for _ in range(per_task):
        replay.add(
            np.arange(num_tasks),
            rng.normal(size=(num_tasks, OBS_DIM)),
            rng.uniform(-1, 1, (num_tasks, ACT_DIM)),
            rng.uniform(size=num_tasks),
            rng.normal(size=(num_tasks, OBS_DIM)),
            np.zeros(num_tasks),
        )
    return replay


def interleaved_medians(steps: dict[str, Callable[[], None]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each callable, timed in rounds that visit every callable once (fair under drift)."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    """The project's short commit hash ("unknown" outside a git checkout)."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
