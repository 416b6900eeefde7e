"""Cost of each balancer inside a full multi-task SAC update, as a ratio to `uniform` (same process).

    python benchmarks/balancers.py [--tasks 10 50] [--rounds 5] [--no-memory]

MT sizes: 3 x 400 networks, batch 128 per task; each balancer on the losses its config balances
(famo and igb: the critic; the others: critic and actor). `kbackward` is the reference way of getting per-task
gradients (K separate backward passes) with pcgrad's combination, timed at K=10 only. Peak extra
memory: each method runs alone in a subprocess and reports how far 3 updates raise its peak RSS (CPU)
or CUDA memory above the built agent, replay and one warm-up update, minus the same for uniform.
Targets: famo <= 1.25; pcgrad, cagrad, fairgrad, nashmtl <= 1.5 (K=10), <= 3 (K=50);
kbackward >= 3 at K=10.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ACT_DIM, OBS_DIM, filled_replay, interleaved_medians, machine  # noqa: E402

from mtrl import balancers  # noqa: E402
from mtrl.agents import SACAgent, SACConfig  # noqa: E402
from mtrl.agents.factory import build_balancers  # noqa: E402
from mtrl.balancers.objective import BalancedObjective, split_sample_loss  # noqa: E402
from mtrl.batch import task_mean  # noqa: E402
from mtrl.config import BalancerConfig  # noqa: E402

METHODS = [
    "uniform",
    "famo",
    "igb",
    "igbv2",
    "pcgrad",
    "cagrad",
    "fairgrad",
    "nashmtl",
    "mgda",
    "paretomtl",
    "igb+nashmtl",
    "famo+pcgrad",
]  # "a+b": loss weighting a composed with gradient method b
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "balancer"


class KBackwardObjective(BalancedObjective):
    """Reference: per-task gradients from K separate backward passes instead of one vmap pass."""

    def per_task_gradients(self, sample_loss, tensors, counts):
        params = self.parameters()
        per_sample, aux = split_sample_loss(sample_loss(params, **tensors))
        ids = tensors["task_ids"]
        losses = task_mean(per_sample, ids, self.num_tasks)
        G = balancers.per_task_gradients_loop(losses, list(params.values())).detach()
        return G, (losses.detach(), {k: task_mean(v.detach(), ids, self.num_tasks) for k, v in aux.items()})


def balancer_config(method: str) -> BalancerConfig:
    """The configs/balancer/<name>.yaml setting of `method`; "a+b" composes loss weighting a with gradient method b
    on the losses a balances (its apply_to: the critic, since a needs positive losses)."""
    weighting, _, name = method.rpartition("+")
    name = "pcgrad" if name == "kbackward" else name
    config = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    options = {k: v for k, v in config.items() if k not in ("name", "apply_to")}
    apply_to = config.get("apply_to", ["critic", "actor"])
    if weighting:
        apply_to = OmegaConf.load(CONFIGS / f"{weighting}.yaml").get("apply_to")
        options.update(loss_weighting=weighting, loss_weighting_options={})
    if name == "igbv2":  # its agent trains from the first update, one SAC step per update: the schedule's
        options.update(random_steps=0, update_after=0, update_every=1)  # cost once running (0.5-1 step/update)
    return BalancerConfig(config["name"], list(apply_to), options)


def make_agent(method: str, num_tasks: int, device: torch.device) -> SACAgent:
    """MT-SAC with `method` on the losses its config balances (configs/balancer/<name>.yaml's apply_to)."""
    torch.manual_seed(0)
    agent = SACAgent(OBS_DIM, ACT_DIM, [f"task{i}" for i in range(num_tasks)], SACConfig(), {"name": "onehot"}, device)
    agent.set_balancers(**build_balancers(balancer_config(method), agent))
    if method == "kbackward":
        for net in ("critic", "actor"):
            objective = agent.objectives[net]
            agent.objectives[net] = KBackwardObjective(objective.balancer, objective.module, num_tasks)
    return agent


def update_fn(agent: SACAgent, replay, counts):
    return lambda: agent.update(replay.sample(counts))


def peak_memory(method: str, num_tasks: int) -> float:
    """Peak memory (MiB) that 3 updates with `method` add, measured in a fresh process.

    On CPU, glibc is told to serve every block >= 64 KiB by mmap (a fixed threshold), so freed tensors go
    back to the kernel and the resident set tracks torch's live tensors; the probe then resets the kernel's
    peak-RSS mark after set-up and reads it after the updates.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    out = subprocess.run(
        [sys.executable, __file__, "--memory-probe", method, str(num_tasks)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _rss_kib(field: str) -> int:
    """A `Vm*` line of /proc/self/status (kB)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


def memory_probe(method: str, num_tasks: int) -> None:
    """Print the peak memory (MiB) that 3 updates add on top of the built agent, replay and one update."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    agent = make_agent(method, num_tasks, device)
    replay = filled_replay(num_tasks, per_task=256)
    counts = np.full(num_tasks, 128)
    agent.update(replay.sample(counts))  # optimiser state and lazily built buffers exist from here on
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
        before = _rss_kib("VmRSS:") * 1024
    for _ in range(3):
        agent.update(replay.sample(counts))
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _rss_kib("VmHWM:") * 1024
    print((peak - before) / 2**20)


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
        entry = {
            m: {"update_ms": round(s * 1e3, 1), "ratio_to_uniform": round(s / seconds["uniform"], 3)}
            for m, s in seconds.items()
        }
        if not args.no_memory:
            base = peak_memory("uniform", k)
            for m in methods:
                entry[m]["peak_extra_mib"] = round(peak_memory(m, k) - base, 1)
        report["results"][f"K={k}"] = entry
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
