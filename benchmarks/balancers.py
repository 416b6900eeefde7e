"""Cost of each balancer inside a full multi-task SAC update, as a ratio to `uniform` (same process).

    python benchmarks/balancers.py [--tasks 10 50] [--rounds 5] [--no-memory]

MT sizes: 3 x 400 networks, batch 128 per task. `kbackward` is the reference way of getting per-task
gradients (K separate backward passes) with pcgrad's combination, timed at K=10 only. Peak extra
memory: each method runs alone in a subprocess and reports its peak RSS (CPU) or peak CUDA memory,
minus uniform's. Targets: famo <= 1.25; pcgrad, cagrad, fairgrad, nashmtl <= 1.5 (K=10), <= 3 (K=50);
kbackward >= 3 at K=10.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ACT_DIM, OBS_DIM, filled_replay, interleaved_medians, machine  # noqa: E402

from mtrl import balancers  # noqa: E402
from mtrl.agents import SACAgent, SACConfig  # noqa: E402
from mtrl.balancers.objective import BalancedObjective, task_mean  # noqa: E402

METHODS = ["uniform", "famo", "igb", "pcgrad", "cagrad", "fairgrad", "nashmtl"]
OPTIONS = {"famo": {}, "cagrad": {"c": 0.9}, "fairgrad": {"alpha": 2.0}, "pcgrad": {"seed": 0}}


class KBackwardObjective(BalancedObjective):
    """Reference: per-task gradients from K separate backward passes instead of one vmap pass."""

    def per_task_gradients(self, sample_loss, tensors, counts):
        params = dict(self.module.named_parameters())
        losses = task_mean(sample_loss(params, **tensors), tensors["task_ids"], self.num_tasks)
        return balancers.per_task_gradients_loop(losses, list(params.values())).detach(), losses.detach()


def make_agent(method: str, num_tasks: int, device: torch.device) -> SACAgent:
    torch.manual_seed(0)
    agent = SACAgent(OBS_DIM, ACT_DIM, [f"task{i}" for i in range(num_tasks)], SACConfig(), {"name": "onehot"}, device)
    name = "pcgrad" if method == "kbackward" else method
    agent.set_balancers(*(balancers.make(name, num_tasks, **OPTIONS.get(name, {})) for _ in range(2)))
    if method == "kbackward":
        agent.critic_objective = KBackwardObjective(agent.critic_objective.balancer, agent.critic, num_tasks)
        agent.actor_objective = KBackwardObjective(agent.actor_objective.balancer, agent.actor, num_tasks)
    return agent


def update_fn(agent: SACAgent, replay, counts):
    return lambda: agent.update(replay.sample(counts))


def peak_memory(method: str, num_tasks: int) -> float:
    """Peak memory (MiB) of a process that builds the agent and runs 3 updates with `method`."""
    out = subprocess.run([sys.executable, __file__, "--memory-probe", method, str(num_tasks)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def memory_probe(method: str, num_tasks: int) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    agent = make_agent(method, num_tasks, device)
    replay = filled_replay(num_tasks, per_task=256)
    counts = np.full(num_tasks, 128)
    for _ in range(3):
        agent.update(replay.sample(counts))
    if device.type == "cuda":
        print(torch.cuda.max_memory_allocated() / 2**20)
    else:
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-probe", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe[0], int(args.memory_probe[1]))
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report = {"machine": machine(), "batch_per_task": 128, "hidden": [400, 400, 400], "results": {}}
    for k in args.tasks:
        methods = METHODS + (["kbackward"] if k <= 10 else [])
        replay = filled_replay(k, per_task=256)
        counts = np.full(k, 128)
        steps = {m: update_fn(make_agent(m, k, device), replay, counts) for m in methods}
        seconds = interleaved_medians(steps, args.rounds)
        entry = {m: {"update_ms": round(s * 1e3, 1), "ratio_to_uniform": round(s / seconds["uniform"], 3)}
                 for m, s in seconds.items()}
        if not args.no_memory:
            base = peak_memory("uniform", k)
            for m in methods:
                entry[m]["peak_extra_mib"] = round(peak_memory(m, k) - base, 1)
        report["results"][f"K={k}"] = entry
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
