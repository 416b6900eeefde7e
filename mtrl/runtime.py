"""Run-time set-up shared by every entry point: the device, seeding and threads, and the global RNG states."""

from __future__ import annotations

import ctypes
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtrl.errors import UserError


def pick_device(name: str, key: str = "device") -> torch.device:
    """'auto' means CUDA when present, else CPU; anything else is passed to torch.device. `key` is the option
    that named it, for the error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"{key}='{name}' is not a torch device; use auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}='{name}' but CUDA is not available here; use {key}=cpu or {key}=auto")
    return device


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's control group in cores (containers, Slurm), or None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2: "<quota|max> <period>"
    except (OSError, ValueError):
        try:  # cgroup v1
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or float(period) <= 0:
        return None
    return float(quota) / float(period)


def available_cores() -> int:
    """Cores this process can actually use: its CPU affinity mask, capped by its control group's CPU quota.

    torch's own default counts the machine's cores, which oversubscribes a process pinned to fewer cores
    (taskset, Slurm) or limited by a container quota.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cores, math.floor(limit))) if limit is not None else max(1, cores)


def default_threads() -> int:
    """torch's intra-op threads for `torch_threads=0`: OMP_NUM_THREADS when set, else `available_cores()`."""
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else available_cores()


def seed_everything(seed: int, torch_threads: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU runs are then deterministic); set torch's thread count
    (`torch_threads`, or `default_threads()` for 0)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(torch_threads if torch_threads > 0 else default_threads())


#: glibc mallopt parameters, and the largest mmap threshold it accepts on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
#: Free memory at the top of the heap beyond this goes back to the system.
TRIM_THRESHOLD = 1024 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed blocks of up to 32 MB for reuse instead of returning them to the system, which
    then page-faults them in again: an eager 3 x 400 update allocated 3,000-5,000 fresh pages per update (7-10 ms
    of system time in ~200 ms, one thread). Freed memory stays with the process (bounded by its peak). Whether it
    applied (False where the C library has no mallopt: not glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def rng_states() -> dict[str, Any]:
    """The global RNG states, for checkpoints."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
