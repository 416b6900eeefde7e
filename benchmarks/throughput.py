"""Throughput on MT10: raw vector-env steps/s, the training loop's env steps/s, one SAC update's time.

    python benchmarks/throughput.py [--vector-steps 1000] [--updates 20]

Prints JSON. The loop/raw ratio is the share of env speed the training loop keeps while collecting
(target >= 0.9); the update's GFLOP/s is set against a large matmul's GFLOP/s measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from torch.utils.flop_counter import FlopCounterMode
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ACT_DIM, OBS_DIM, filled_replay, interleaved_medians, machine  # noqa: E402

import mtrl.config  # noqa: E402,F401
from envs import build_env_spec  # noqa: E402
from mtrl.agents import SACAgent, SACConfig  # noqa: E402
from mtrl.trainer import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def raw_env_steps_per_s(spec, vector_steps: int) -> float:
    """gymnasium vector env alone, random actions, no bookkeeping or learning."""
    env = spec.make(seed=0)
    try:
        env.reset(seed=0)
        actions = np.random.default_rng(0).uniform(-1, 1, (vector_steps, env.num_envs, env.act_dim)).astype(np.float32)
        start = time.perf_counter()
        for a in actions:
            env.vector_env.step(a)
        return vector_steps * env.num_envs / (time.perf_counter() - start)
    finally:
        env.close()


def loop_env_steps_per_s(vector_steps: int, hidden: str, policy: bool) -> float:
    """The real training loop collecting (no updates), with the actor (`policy`) or random warm-up actions:
    its own logged perf/env_steps_per_s."""
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        steps = vector_steps * 10
        cfg = compose(config_name="train", overrides=[
            "env=mt10", "env.protocol=mtrl", f"run_dir={tmp}", f"total_steps={steps}",
            f"warmup_steps={0 if policy else steps}",
            "updates_per_step=0", "eval_every=0", "eval_episodes=1", "checkpoint_every=0", f"log_every={steps // 5}",
            "progress=false", f"agent.hidden_sizes={hidden}"])
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout pure JSON
            Trainer(cfg, Path(tmp)).run()
        acc = EventAccumulator(str(Path(tmp) / "tb")).Reload()
        values = [e.value for e in acc.Scalars("perf/env_steps_per_s")]
        return float(np.median(values[1:] if len(values) > 1 else values))


def update_time(spec, updates: int) -> tuple[float, float]:
    """Median seconds of one SAC update at MT10 sizes (3 x 400, 128 per task) and its FLOP count."""
    agent = SACAgent(OBS_DIM, ACT_DIM, spec.task_names, SACConfig(), {"name": "onehot"}, torch.device("cpu"))
    replay = filled_replay(10)
    counts = np.full(10, 128)
    with FlopCounterMode(display=False) as counter:
        agent.update(replay.sample(counts))
    seconds = interleaved_medians({"update": lambda: agent.update(replay.sample(counts))}, updates)["update"]
    return seconds, float(counter.get_total_flops())


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vector-steps", type=int, default=1000, help="vector steps for the env measurements")
    parser.add_argument("--updates", type=int, default=20, help="timed SAC updates")
    args = parser.parse_args()
    spec = build_env_spec({"tasks": "mt10", "protocol": "mtrl"}, seed=0)
    # Raw speed measured before and after the loop (their mean), so slow drift of the machine cancels.
    raw_before = raw_env_steps_per_s(spec, args.vector_steps)
    loop_random = loop_env_steps_per_s(args.vector_steps, "[400,400,400]", policy=False)
    loop = loop_env_steps_per_s(args.vector_steps, "[400,400,400]", policy=True)
    raw = (raw_before + raw_env_steps_per_s(spec, args.vector_steps)) / 2
    seconds, flops = update_time(spec, args.updates)
    peak = matmul_gflops()
    print(json.dumps({
        "machine": machine(),
        "raw_vector_env_steps_per_s": round(raw, 1),
        "training_loop_env_steps_per_s_random_actions": round(loop_random, 1),
        "loop_random_over_raw": round(loop_random / raw, 3),
        "training_loop_env_steps_per_s_actor": round(loop, 1),
        "loop_actor_over_raw": round(loop / raw, 3),
        "sac_update_ms": round(seconds * 1e3, 2),
        "sac_update_gflop": round(flops / 1e9, 3),
        "sac_update_gflops_per_s": round(flops / seconds / 1e9, 2),
        "matmul_2048_gflops_per_s": round(peak, 2),
        "update_over_matmul": round(flops / seconds / 1e9 / peak, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
