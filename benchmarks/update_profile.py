"""Where an eager SAC update's time goes: FLOPs executed against the maths' minimum, and CPU time by kind.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/update_profile.py [--hidden 64,64] [--updates 30]

The `experiment=mt10_mwplus` agent (one-hot, uniform balancer, clip 1, batch 1280) on one fixed batch, one thread.
FLOPs: executed ones counted by torch's FlopCounterMode over one update; the minimum is what the maths needs
with every forward and backward matmul of the networks counted once: the critic target (actor on s', two
target critics), the critic loss (two critics forward, their backward with weight gradients and input
gradients below the first layer), the actor loss (actor forward, two critics forward, their backward for
input gradients only, the actor's backward). Time: torch.profiler's self CPU time per aten op over `--updates`
updates, grouped into GEMMs (mm, addmm, bmm, baddbmm), the fused Adam kernel, and elementwise / other ops; the
shares are of the profiled time (the profiler adds its own cost to every op). The GEMMs are also replayed alone
(each recorded shape on random tensors): their time over the unprofiled wall time is the GEMM-bound part; the
rest is elementwise work, dispatch and Python. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from common import filled_replay  # noqa: E402
from peer_side import TASKS, machine, preset  # noqa: E402

from mtrl.agents.factory import build_agent  # noqa: E402

GEMMS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
OPTIMIZER = {"aten::_fused_adam_", "aten::_fused_adamw_"}


def minimum_flops(widths: list[int], obs: int, act: int, tasks: int, batch: int) -> int:
    """2 * rows * in * out per matmul: forwards, weight gradients and input gradients, each needed once."""

    def layers(inputs: int, outputs: int) -> list[tuple[int, int]]:
        dims = [inputs, *widths, outputs]
        return list(zip(dims[:-1], dims[1:]))

    actor, critic = layers(obs + tasks, 2 * act), layers(obs + act + tasks, 1)
    forward = {net: sum(2 * batch * i * o for i, o in shapes) for net, shapes in (("actor", actor), ("critic", critic))}
    below_first = {net: sum(2 * batch * i * o for i, o in shapes[1:]) for net, shapes in (("a", actor), ("c", critic))}
    target = forward["actor"] + 2 * forward["critic"]
    critic_step = 2 * (forward["critic"] + forward["critic"] + below_first["c"])  # forward, weight and input grads
    actor_step = forward["actor"] + 2 * forward["critic"] + 2 * forward["critic"]  # critics: forward + input grads
    actor_step += forward["actor"] + below_first["a"]  # the actor's weight and input gradients
    return target + critic_step + actor_step


def replay_gemms(events, updates: int, repeats: int = 20) -> float:
    """ms per update that the update's GEMMs take alone: every (op, input shapes) the profile recorded, run
    `repeats` times on random tensors of those shapes, scaled by its calls per update."""
    total = 0.0
    for event in events:
        if event.key not in ("aten::mm", "aten::addmm") or not event.input_shapes:
            continue
        shapes = [tuple(s) for s in event.input_shapes if s]
        tensors = [torch.randn(s) for s in shapes]
        op = torch.mm if event.key == "aten::mm" else torch.addmm
        op(*tensors)
        begin = time.perf_counter()
        for _ in range(repeats):
            op(*tensors)
        total += (time.perf_counter() - begin) / repeats * event.count / updates
    return 1e3 * total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="64,64")
    parser.add_argument("--updates", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = preset([f"agent.hidden_sizes=[{args.hidden}]", "torch_threads=1", "compile=none"])
    agent = build_agent(config, [f"task{i}" for i in range(TASKS)], 39, 4)
    batch = filled_replay(TASKS, per_task=256).sample(np.full(TASKS, config.batch_size_per_task))
    for _ in range(5):
        agent.update(batch)
    with FlopCounterMode(display=False) as counter:
        agent.update(batch)
    executed = int(counter.get_total_flops())
    begin = time.perf_counter()
    for _ in range(args.updates):
        agent.update(batch)
    wall_ms = 1e3 * (time.perf_counter() - begin) / args.updates
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.updates):
            agent.update(batch)
    events = prof.key_averages()
    gemm_alone_ms = replay_gemms(prof.key_averages(group_by_input_shape=True), args.updates)
    self_ms = {"gemm": 0.0, "adam": 0.0, "other_ops": 0.0}
    for event in events:
        kind = "gemm" if event.key in GEMMS else "adam" if event.key in OPTIMIZER else "other_ops"
        self_ms[kind] += event.self_cpu_time_total / 1e3 / args.updates
    ops = sum(e.count for e in events if e.key.startswith("aten::")) / args.updates
    widths = [int(w) for w in args.hidden.split(",")]
    minimum = minimum_flops(widths, 39, 4, TASKS, int(config.batch_size_per_task * TASKS))
    in_ops = sum(self_ms.values())
    print(
        json.dumps(
            {
                "what": "benchmarks/update_profile.py (eager update, experiment=mt10_mwplus agent)",
                "hidden": args.hidden,
                "wall_ms_per_update": round(wall_ms, 2),
                "gflop_executed": round(executed / 1e9, 4),
                "gflop_minimum": round(minimum / 1e9, 4),
                "executed_over_minimum": round(executed / minimum, 3),
                "aten_ops_per_update": round(ops, 1),
                "self_cpu_ms_per_update": {k: round(v, 2) for k, v in self_ms.items()},
                "profiled_share": {k: round(v / in_ops, 3) for k, v in self_ms.items()},
                "gemm_alone_ms_per_update": round(gemm_alone_ms, 2),
                "gemm_alone_over_wall": round(gemm_alone_ms / wall_ms, 3),
                "machine": machine(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
