"""Throughput on MT10: raw vector-env steps/s, the training loop's env steps/s, one SAC update's time.

    python benchmarks/throughput.py [--vector-steps 1000] [--loop-steps 200] [--updates 20] [--device cpu]
        [--update-only]

`sequential_step_ms` / `overlapped_step_ms` / `overlap_speedup`: the training loop's time per MT10 vector
step with real updates (one per vector step, 3 x 400 networks, one torch thread) when the envs step after
the update in the learner's process (`env.vectorization=sync`) vs in a worker process while the learner
updates (`async`, one worker); the same at 2 x 64 networks under `small_net_*`.

Prints JSON. The loop/raw ratio is the share of env speed the training loop keeps while collecting
(target >= 0.9); the update's GFLOP/s (eager and compiled, also with `--update-only`) is set against a large
matmul's GFLOP/s measured in the same run.

Update times (interleaved medians, one process): `update_ms_eager` / `update_ms_compiled` at MT10 sizes
(3 x 400, batch 128 per task, K=10; compiled = compile=default, and on CUDA also `update_ms_cuda_graphs`
beside `update_ms_compiled` without graphs). Host overhead: at tiny sizes (2 x 32, batch 16 per task,
K=10), where dispatch dominates, our uniform SAC update's time divided by that of `PlainMTSAC` below, a
minimal plain-PyTorch multi-task SAC update of the same maths (targets <= 1.2 eager, <= 1.0 compiled).
`--update-only` skips the env measurements (the GPU check uses it).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ACT_DIM, OBS_DIM, filled_replay, interleaved_medians, machine  # noqa: E402

import mtrl.config  # noqa: E402,F401
from envs import build_env_spec  # noqa: E402
from mtrl.agents import SACAgent, SACConfig  # noqa: E402
from mtrl.agents.optim import adam_flags  # noqa: E402
from mtrl.config.parse import parse_train  # noqa: E402
from mtrl.train.trainer import Trainer  # noqa: E402

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
    configs = str(ROOT / "configs")
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(config_dir=configs, version_base="1.3"):
        steps = vector_steps * 10
        cfg = compose(
            config_name="train",
            overrides=[
                "env=mt10",
                "env.protocol=mtrl",
                f"run_dir={tmp}",
                f"total_steps={steps}",
                f"warmup_steps={0 if policy else steps - 10}",
                "updates_per_step=1e-9",  # collection only: the update budget never reaches one update
                "eval_every=0",
                "eval_episodes=1",
                "checkpoint_every=0",
                f"log_every={steps // 5}",
                "progress=false",
                f"agent.hidden_sizes={hidden}",
            ],
        )
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout pure JSON
            Trainer(parse_train(cfg), Path(tmp)).run()
        acc = EventAccumulator(str(Path(tmp) / "tb")).Reload()
        values = [e.value for e in acc.Scalars("perf/env_steps_per_s")]
        return float(np.median(values[1:] if len(values) > 1 else values))


def loop_vector_step_ms(vector_steps: int, hidden: str, vectorization: str) -> float:
    """The training loop with real updates (one per vector step, batch 128 per task) on MT10: ms per vector
    step once learning runs. `sync` steps the envs, then updates (sequential); `async` steps them in one
    worker process while the learner updates (overlapped). One torch thread, so the worker has a core."""
    configs = str(ROOT / "configs")
    warmup, period = 128, max(vector_steps // 4, 1)
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(config_dir=configs, version_base="1.3"):
        workers = ["env.workers=1"] if vectorization == "async" else []
        cfg = compose(
            config_name="train",
            overrides=[
                "env=mt10",
                "env.protocol=mtrl",
                f"env.vectorization={vectorization}",
                *workers,
                f"run_dir={tmp}",
                f"total_steps={(warmup + 4 * period) * NUM_TASKS}",
                f"warmup_steps={warmup * NUM_TASKS}",
                "eval_every=0",
                "eval_episodes=1",
                "checkpoint_every=0",
                f"log_every={period * NUM_TASKS}",
                "progress=false",
                "torch_threads=1",
                "compile=none",
                f"agent.hidden_sizes={hidden}",
            ],
        )
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout pure JSON
            Trainer(parse_train(cfg), Path(tmp)).run()
        acc = EventAccumulator(str(Path(tmp) / "tb")).Reload()
        rates = [
            e.value for e in acc.Scalars("perf/env_steps_per_s") if e.step > warmup * NUM_TASKS + period * NUM_TASKS
        ]
        return 1e3 * NUM_TASKS / float(np.median(rates))


def overlap_report(vector_steps: int) -> dict[str, float]:
    """Sequential vs overlapped loop at MT10 sizes (the issue's keys) and at 2 x 64 networks, where the update
    is about as long as the env step and overlap matters most on a CPU."""
    out: dict[str, float] = {}
    for prefix, hidden in (("", "[400,400,400]"), ("small_net_", "[64,64]")):
        sequential = loop_vector_step_ms(vector_steps, hidden, "sync")
        overlapped = loop_vector_step_ms(vector_steps, hidden, "async")
        out.update(
            {
                f"{prefix}sequential_step_ms": round(sequential, 2),
                f"{prefix}overlapped_step_ms": round(overlapped, 2),
                f"{prefix}overlap_speedup": round(sequential / overlapped, 3),
            }
        )
    return out


MT10_SIZES = ([400, 400, 400], 128)  # hidden sizes, batch per task
TINY_SIZES = ([32, 32], 16)
NUM_TASKS = 10


def _mlp(in_dim: int, hidden: list[int], out_dim: int) -> nn.Sequential:
    dims = [in_dim, *hidden]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], out_dim))


class PlainMTSAC:
    """The reference of the host-overhead ratio: multi-task SAC as one would write it in plain PyTorch.

    Same maths as SACAgent with the uniform balancer: one-hot task input, twin critics with Polyak
    targets, one temperature per task, tanh-Gaussian actor with clamped log-std, per-task mean losses
    averaged over tasks (equal counts), Adam in the agent's implementation (`mtrl.agents.optim.adam_flags`).
    No balancer machinery: one backward per network.
    """

    def __init__(
        self, num_tasks: int, hidden: list[int], device: torch.device, gamma: float = 0.99, tau: float = 0.005
    ):
        self.k, self.gamma, self.tau, self.target_entropy = num_tasks, gamma, tau, -float(ACT_DIM)
        self.actor = _mlp(OBS_DIM + num_tasks, hidden, 2 * ACT_DIM).to(device)
        self.q1 = _mlp(OBS_DIM + ACT_DIM + num_tasks, hidden, 1).to(device)
        self.q2 = _mlp(OBS_DIM + ACT_DIM + num_tasks, hidden, 1).to(device)
        self.targets = [copy.deepcopy(self.q1).requires_grad_(False), copy.deepcopy(self.q2).requires_grad_(False)]
        self.log_alpha = torch.zeros(num_tasks, device=device, requires_grad=True)
        self.critic_params = [*self.q1.parameters(), *self.q2.parameters()]
        self.target_params = [p for q in self.targets for p in q.parameters()]
        fast = adam_flags(device)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), 3e-4, **fast)
        self.critic_optim = torch.optim.Adam(self.critic_params, 3e-4, **fast)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], 3e-4, **fast)

    def policy(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.actor(x).chunk(2, -1)
        log_std = log_std.clamp(-20.0, 2.0)
        noise = torch.randn_like(mean)
        u = mean + log_std.exp() * noise
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return torch.tanh(u), log_prob - (2 * (math.log(2.0) - u - F.softplus(-2 * u))).sum(-1)

    def update(self, batch) -> dict[str, torch.Tensor]:
        onehot = F.one_hot(batch.task_ids, self.k).float()
        alpha = self.log_alpha.detach().exp()[batch.task_ids]
        with torch.no_grad():
            next_action, next_log_prob = self.policy(torch.cat([batch.next_obs, onehot], -1))
            x = torch.cat([batch.next_obs, next_action, onehot], -1)
            value = torch.min(self.targets[0](x), self.targets[1](x)).squeeze(-1) - alpha * next_log_prob
            target = batch.reward + self.gamma * (1 - batch.terminated) * value
        x = torch.cat([batch.obs, batch.action, onehot], -1)
        td = (self.q1(x).squeeze(-1) - target).pow(2) + (self.q2(x).squeeze(-1) - target).pow(2)
        critic_losses = td.view(self.k, -1).mean(1)
        self.critic_optim.zero_grad()
        critic_losses.mean().backward()
        self.critic_optim.step()
        action, log_prob = self.policy(torch.cat([batch.obs, onehot], -1))
        x = torch.cat([batch.obs, action, onehot], -1)
        actor_losses = (alpha * log_prob - torch.min(self.q1(x), self.q2(x)).squeeze(-1)).view(self.k, -1).mean(1)
        self.actor_optim.zero_grad()
        actor_losses.mean().backward()
        self.actor_optim.step()
        alpha_losses = -self.log_alpha * (log_prob.detach().view(self.k, -1).mean(1) + self.target_entropy)
        self.alpha_optim.zero_grad()
        alpha_losses.sum().backward()
        self.alpha_optim.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.target_params, self.critic_params, self.tau)
        return {
            "critic_loss": critic_losses.detach(),
            "actor_loss": actor_losses.detach(),
            "alpha": self.log_alpha.detach().exp(),
        }


def make_agent(
    hidden: list[int], device: torch.device, compile_mode: str = "none", cuda_graphs: bool = True
) -> SACAgent:
    """MT-SAC at the benchmark's sizes (onehot, uniform balancer), seeded, optionally compiled."""
    torch.manual_seed(0)
    agent = SACAgent(
        OBS_DIM,
        ACT_DIM,
        [f"task{i}" for i in range(NUM_TASKS)],
        SACConfig(hidden_sizes=hidden),
        {"name": "onehot"},
        device,
    )
    agent.compile(compile_mode, cuda_graphs=cuda_graphs)
    return agent


def synced(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """`fn` followed by a wait for the device (so wall-clock timing covers the kernels)."""

    def run() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def update_times(
    device: torch.device, sizes: tuple[list[int], int], rounds: int, plain: bool = False
) -> dict[str, float]:
    """Median seconds of one update per variant (eager, compiled, on CUDA also compiled without graphs;
    `plain`: PlainMTSAC too), interleaved on one fixed batch on `device` (the warm-up compiles)."""
    hidden, per_task = sizes
    variants = {"eager": make_agent(hidden, device), "compiled": make_agent(hidden, device, "default")}
    if device.type == "cuda":
        variants["compiled_no_graphs"] = make_agent(hidden, device, "default", cuda_graphs=False)
    batch = filled_replay(NUM_TASKS, per_task=256).sample(np.full(NUM_TASKS, per_task)).to(device)
    steps = {name: synced(lambda a=agent: a.update(batch), device) for name, agent in variants.items()}
    if plain:
        torch.manual_seed(0)
        reference = PlainMTSAC(NUM_TASKS, hidden, device)
        steps["plain"] = synced(lambda: reference.update(batch), device)
    return interleaved_medians(steps, rounds, warmup=3)


def update_flops() -> float:
    """FLOPs of one eager SAC update at MT10 sizes."""
    agent = make_agent(MT10_SIZES[0], torch.device("cpu"))
    batch = filled_replay(NUM_TASKS).sample(np.full(NUM_TASKS, MT10_SIZES[1]))
    with FlopCounterMode(display=False) as counter:
        agent.update(batch)
    return float(counter.get_total_flops())


def update_report(device: torch.device, updates: int, tiny_rounds: int) -> dict[str, object]:
    """The update keys of the JSON: MT10-size times and (tiny_rounds > 0) the tiny-size host-overhead ratios
    (measured first, in a process that has compiled nothing else yet)."""
    tiny = update_times(device, TINY_SIZES, tiny_rounds, plain=True) if tiny_rounds > 0 else None
    mt10 = update_times(device, MT10_SIZES, updates)
    report: dict[str, object] = {
        "update_ms_eager": round(mt10["eager"] * 1e3, 2),
        "update_ms_compiled": round(mt10.get("compiled_no_graphs", mt10["compiled"]) * 1e3, 2),
    }
    if device.type == "cuda":
        report["update_ms_cuda_graphs"] = round(mt10["compiled"] * 1e3, 2)
    if tiny is not None:
        report.update(
            {
                "host_overhead_ratio_eager": round(tiny["eager"] / tiny["plain"], 3),
                "host_overhead_ratio_compiled": round(tiny["compiled"] / tiny["plain"], 3),
                "host_overhead_ms": {name: round(seconds * 1e3, 3) for name, seconds in tiny.items()},
            }
        )
    return report


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def flop_efficiency(updates: dict[str, float]) -> dict[str, float]:
    """The MT10-size update's GFLOP/s, eager and compiled, against a 2048 matmul's measured now (one CPU thread
    in the benchmarks' runs): `update_over_matmul` (eager) and `update_over_matmul_compiled`."""
    flops, peak = update_flops(), matmul_gflops()
    report = {"sac_update_gflop": round(flops / 1e9, 3), "matmul_2048_gflops_per_s": round(peak, 2)}
    for kind, suffix in (("eager", ""), ("compiled", "_compiled")):
        gflops = flops / (updates[f"update_ms_{kind}"] / 1e3) / 1e9
        report[f"sac_update_gflops_per_s{suffix}"] = round(gflops, 2)
        report[f"update_over_matmul{suffix}"] = round(gflops / peak, 3)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vector-steps", type=int, default=1000, help="vector steps for the env measurements")
    parser.add_argument("--updates", type=int, default=20, help="timed SAC updates at MT10 sizes")
    parser.add_argument("--tiny-updates", type=int, default=200, help="timed SAC updates at tiny sizes (0: skip)")
    parser.add_argument("--device", default="cpu", help="where the updates run (cpu, cuda)")
    parser.add_argument("--update-only", action="store_true", help="only the update measurements")
    parser.add_argument("--loop-steps", type=int, default=200, help="vector steps with updates per overlap measurement")
    args = parser.parse_args()
    device = torch.device(args.device)
    updates = update_report(device, args.updates, args.tiny_updates)
    updates.update(flop_efficiency(updates) if device.type == "cpu" else {})
    if args.update_only:
        print(json.dumps({"machine": machine(), **updates}, indent=2))
        return
    spec = build_env_spec({"tasks": "mt10", "protocol": "mtrl"}, seed=0)
    # Raw speed measured before and after the loop (their mean), so slow drift of the machine cancels.
    raw_before = raw_env_steps_per_s(spec, args.vector_steps)
    loop_random = loop_env_steps_per_s(args.vector_steps, "[400,400,400]", policy=False)
    loop = loop_env_steps_per_s(args.vector_steps, "[400,400,400]", policy=True)
    raw = (raw_before + raw_env_steps_per_s(spec, args.vector_steps)) / 2
    overlap = overlap_report(args.loop_steps)
    print(
        json.dumps(
            {
                "machine": machine(),
                "raw_vector_env_steps_per_s": round(raw, 1),
                "training_loop_env_steps_per_s_random_actions": round(loop_random, 1),
                "loop_random_over_raw": round(loop_random / raw, 3),
                "training_loop_env_steps_per_s_actor": round(loop, 1),
                "loop_actor_over_raw": round(loop / raw, 3),
                **overlap,
                **updates,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
