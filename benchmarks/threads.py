"""Thread oversubscription: the MT10-size SAC update alone and beside one busy single-threaded process.

    python benchmarks/threads.py [--repeats 2] [--rounds 4] [--updates 2] [--settings default passive ...]

Each setting (torch thread count and OpenMP environment variables, which OpenMP reads once, when torch
loads) lives in its own process holding the MT10-size agent (3 x 400 networks, batch 128 per task, K=10,
built as a training run builds it). The settings are timed interleaved: every round asks each process in
turn for `--updates` updates alone, then starts a competing process that spins on one core (`while True:
pass`, what a second single-threaded job does) and asks each again. Every setting thus sees the same
background load (on a shared machine it drifts), and the slowdown ratio (contended / alone) compares
times taken minutes apart at most. `--repeats` starts fresh processes again to show how noisy it is.
Prints JSON: per repeat and setting the update times and the ratio, and medians over repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> (torch threads: None = torch's default, "available" = mtrl.runtime.available_cores(); env variables)
SETTINGS: dict[str, tuple[int | str | None, dict[str, str]]] = {
    "default": (None, {}),
    "threads=1": (1, {}),
    "threads=available": ("available", {}),
    "passive": (None, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "spincount=0": (None, {"GOMP_SPINCOUNT": "0"}),
    "spincount=10000": (None, {"GOMP_SPINCOUNT": "10000"}),
    "kmp_blocktime=0": (None, {"KMP_BLOCKTIME": "0"}),
}
OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def serve(threads: int | str | None) -> None:
    """Child process: build the MT10 update, say "ready", then answer each `<n>` on stdin with the mean
    seconds of n updates."""
    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import ACT_DIM, OBS_DIM, filled_replay

    import mtrl.config  # noqa: F401  (resolvers)
    from mtrl.agents.factory import build_agent
    from mtrl.config.parse import parse_train
    from mtrl.runtime import available_cores

    if threads is not None:
        torch.set_num_threads(available_cores() if threads == "available" else int(threads))
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        config = parse_train(compose(config_name="train", overrides=["env=mt10", "device=cpu", "run_dir=unused"]))
    tasks = [f"task{i}" for i in range(10)]
    agent = build_agent(config, tasks, OBS_DIM, ACT_DIM)
    replay = filled_replay(len(tasks), per_task=256)
    counts = np.full(len(tasks), config.batch_size_per_task)
    agent.update(replay.sample(counts))  # warm-up: optimiser state, lazily built buffers
    print(json.dumps({"ready": True, "torch_threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        updates = int(line)
        start = time.perf_counter()
        for _ in range(updates):
            agent.update(replay.sample(counts))
        print(json.dumps((time.perf_counter() - start) / updates), flush=True)


class Setting:
    """A serving child process for one setting."""

    def __init__(self, name: str):
        threads, variables = SETTINGS[name]
        env = {key: value for key, value in os.environ.items() if key not in OPENMP_VARIABLES}
        env.update(variables, PYTHONPATH=str(ROOT))
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", json.dumps(threads)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.torch_threads = json.loads(self.process.stdout.readline())["torch_threads"]
        self.alone: list[float] = []
        self.contended: list[float] = []

    def time(self, updates: int) -> float:
        self.process.stdin.write(f"{updates}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()

    def result(self) -> dict:
        alone, contended = statistics.median(self.alone), statistics.median(self.contended)
        return {
            "torch_threads": self.torch_threads,
            "alone_ms": [round(t * 1e3, 1) for t in self.alone],
            "contended_ms": [round(t * 1e3, 1) for t in self.contended],
            "median_alone_ms": round(alone * 1e3, 1),
            "median_contended_ms": round(contended * 1e3, 1),
            "slowdown": round(contended / alone, 2),
        }


def measure(names: list[str], rounds: int, updates: int) -> dict[str, dict]:
    """One repeat: fresh processes per setting, timed interleaved, alone and beside a busy process."""
    settings = [Setting(name) for name in names]
    try:
        for _ in range(rounds):
            for setting in settings:
                setting.alone.append(setting.time(updates))
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                time.sleep(0.2)  # let it reach its loop
                for setting in settings:
                    setting.contended.append(setting.time(updates))
            finally:
                busy.kill()
                busy.wait()
    finally:
        for setting in settings:
            setting.close()
    return {setting.name: setting.result() for setting in settings}


def openmp_runtime() -> str:
    """Which OpenMP runtime torch loaded (GOMP_* variables apply to libgomp, KMP_* to Intel's libiomp)."""
    import torch  # noqa: F401  (loads the runtime)

    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    for library in ("libiomp5", "libgomp", "libomp"):
        if library in maps:
            return library
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--updates", type=int, default=2)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(json.loads(args.serve))
        return
    from mtrl.runtime import available_cores

    load_before = os.getloadavg()
    repeats = [measure(args.settings, args.rounds, args.updates) for _ in range(args.repeats)]
    summary = {
        name: {
            "median_alone_ms": statistics.median(r[name]["median_alone_ms"] for r in repeats),
            "median_contended_ms": statistics.median(r[name]["median_contended_ms"] for r in repeats),
            "slowdowns": [r[name]["slowdown"] for r in repeats],
        }
        for name in args.settings
    }
    report = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "available_cores": available_cores(),
            "openmp": openmp_runtime(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "update": "MT10 SAC, 3x400, batch 128 per task, K=10, CPU",
        "rounds": args.rounds,
        "updates_per_round": args.updates,
        "summary": summary,
        "repeats": repeats,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
