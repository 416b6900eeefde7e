"""The BRC update at the authors' width (experiment=mt10_brc: 3 x 4096 BroNet critics, batch 1024): time per update.

    python benchmarks/brc_update.py [--device cuda] [--updates 20] [--critic-width 4096]

Prints JSON: the networks' parameter counts, and the median update time (ms) of the preset's update (batches
drawn uniformly from all tasks, so per-task counts vary and the update runs eager), and of the same update on
equal per-task counts (batch_sampling=per_task, 102 rows per task) eager and compiled (compile=default), with
the compile time and peak GPU memory. benchmarks/gpu_check.sh runs it; on CPU pass a smaller --critic-width.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import ACT_DIM, OBS_DIM, filled_replay, machine  # noqa: E402
from mtrl.agents.factory import construct_agent  # noqa: E402
from mtrl.config.parse import parse_train  # noqa: E402


def brc_agent(device: torch.device, width: int, equal_counts: bool):
    """experiment=mt10_brc's agent (critic width `width`), planned for uniform or equal-count batches."""
    overrides = ["experiment=mt10_brc", f"agent.critic_hidden_sizes=[{width},{width},{width}]"]
    if equal_counts:
        overrides += ["batch_sampling=per_task", "batch_size=null", "batch_size_per_task=102"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        config = parse_train(compose(config_name="train", overrides=overrides))
    agent = construct_agent(config, [f"task{i}" for i in range(10)], OBS_DIM, ACT_DIM, device)
    rng = np.random.default_rng(0)
    agent.observe_rewards(np.arange(10), rng.uniform(size=10), np.zeros(10, bool), np.ones(10, bool))
    return agent


def median_ms(agent, counts_fn, replay, updates: int, device: torch.device) -> tuple[float, float]:
    """(median ms of `updates` timed updates, seconds of the first update: tracing and compilation included)."""
    times = []
    for _ in range(updates + 1):
        batch = replay.sample(counts_fn())
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        agent.update(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times[1:])), times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--critic-width", type=int, default=4096)
    args = parser.parse_args()
    device = torch.device(args.device)
    replay = filled_replay(10, per_task=1024)
    rng = np.random.default_rng(1)
    uniform = lambda: rng.multinomial(1024, np.full(10, 0.1))  # noqa: E731 (the preset's pooled draw)
    equal = lambda: np.full(10, 102)  # noqa: E731
    result = {"machine": machine(), "device": str(device), "critic_width": args.critic_width}
    agent = brc_agent(device, args.critic_width, equal_counts=False)
    result["params"] = {
        "critics": sum(p.numel() for p in agent.critic.parameters()),
        "actor": sum(p.numel() for p in agent.actor.parameters()),
    }
    result["update_ms_preset_uniform_eager"], _ = median_ms(agent, uniform, replay, args.updates, device)
    del agent
    agent = brc_agent(device, args.critic_width, equal_counts=True)
    result["update_ms_equal_counts_eager"], _ = median_ms(agent, equal, replay, args.updates, device)
    agent.compile("default")
    result["update_ms_equal_counts_compiled"], result["compile_s"] = median_ms(
        agent, equal, replay, args.updates, device
    )
    if device.type == "cuda":
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
