"""A time-boxed real training run for benchmarks/gpu_check.sh: its throughput, peak GPU memory and success so far.

    python benchmarks/gpu_check.py --seconds 180 --out train.json experiment=mt10 compile=default ...

Builds the run as train.py does (Hydra overrides), stops it cleanly after `--seconds` (as Ctrl-C would:
checkpoint, no final evaluation), and writes JSON: env steps/s and updates/s measured once learning has
started (the medians of the run's own perf/* scalars, leaving out the first window after warm-up, which
holds the compilation), the projected wall time of the standard MT10 run (2M vector steps x 10 tasks at
that rate, evaluations excluded), peak GPU memory, the last evaluation's mean success (if one ran) and the
mean success of the last training episodes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtrl.config.parse import parse_train  # noqa: E402
from mtrl.train.trainer import Trainer  # noqa: E402

STANDARD_MT10_ENV_STEPS = 2_000_000 * 10  # the standard run: 2M vector steps of 10 tasks


def steady_median(acc: EventAccumulator, tag: str, after_step: int) -> float | None:
    """Median of a scalar's values logged after `after_step` (None when there are none)."""
    if tag not in acc.Tags()["scalars"]:
        return None
    values = [e.value for e in acc.Scalars(tag) if e.step > after_step]
    return float(np.median(values)) if values else None


def training_success(acc: EventAccumulator, last: int = 20) -> float | None:
    """Mean success of the last `last` training episodes of each task (None before any episode ended)."""
    tags = [t for t in acc.Tags()["scalars"] if t.startswith("train/success/")]
    means = [np.mean([e.value for e in acc.Scalars(t)[-last:]]) for t in tags]
    return float(np.mean(means)) if means else None


def last_evaluation(run_dir: Path) -> dict | None:
    """Step and mean success of the newest eval/step_*.json (None if no evaluation ran)."""
    files = sorted((run_dir / "eval").glob("step_*.json"))
    if not files:
        return None
    step = int(files[-1].stem.split("_")[1])
    return {"step": step, "mean_success": json.loads(files[-1].read_text())["mean_success"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, required=True, help="wall-clock budget of the run")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py")
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        config = parse_train(
            compose(config_name="train", overrides=[*args.overrides, f"run_dir={run_dir}", "progress=false"])
        )
    start = time.perf_counter()
    trainer = Trainer(config, run_dir)
    build_s = time.perf_counter() - start
    timer = threading.Timer(max(args.seconds - build_s, 1.0), lambda: setattr(trainer, "stop_requested", True))
    timer.start()
    try:
        trainer.run()
    finally:
        timer.cancel()
    wall = time.perf_counter() - start
    acc = EventAccumulator(str(run_dir / "tb")).Reload()
    steady_after = config.warmup_steps + config.log_every  # the first learning window holds the compilation
    env_rate = steady_median(acc, "perf/env_steps_per_s", steady_after)
    update_rate = steady_median(acc, "perf/updates_per_s", steady_after)
    report = {
        "overrides": args.overrides,
        "device": str(trainer.agent.device),
        "replay_device": str(trainer.replay.device),
        "compile": config.compile,
        "wall_s": round(wall, 1),
        "build_s": round(build_s, 1),
        "env_steps": trainer.step,
        "updates": trainer.updates,
        "env_steps_per_s": None if env_rate is None else round(env_rate, 1),
        "updates_per_s": None if update_rate is None else round(update_rate, 1),
        "projected_standard_mt10_hours": None if not env_rate else round(STANDARD_MT10_ENV_STEPS / env_rate / 3600, 2),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if torch.cuda.is_available()
        else None,
        "evaluation": last_evaluation(run_dir),
        "training_success_last_episodes": training_success(acc),
        "run_dir": str(run_dir),
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
