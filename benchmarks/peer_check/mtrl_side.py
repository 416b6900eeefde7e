"""One-update cross-check with the Meta-World+ reference, mtrl's side (run in mtrl's venv).

    python benchmarks/peer_check/mtrl_side.py export OUT_DIR       # weights and a batch -> OUT_DIR/init.npz
    /tmp/mwalgo-venv/bin/python benchmarks/peer_check/reference_side.py OUT_DIR [--updates 3]   # -> OUT_DIR/peer.npz
    python benchmarks/peer_check/mtrl_side.py compare OUT_DIR [--updates 3]   # -> JSON: both sides, differences

The `experiment=mt10_mwplus` agent at 2 x 64 with its He-uniform weights, made deterministic where the two
implementations' random numbers would differ: the log-std head's weights zeroed and biases at -20 (std e^-20:
samples are tanh(mean)) and every temperature at e^-12 (the sampled log pi leaves the targets). Both sides then
run the same updates on one fixed 1280-row batch (the peer's critic input order, action before observation,
is mapped), and `compare` reports the losses, the critic gradient norms and the largest parameter
differences after every update. What the noise still reaches (the log-std rows of the actor's output layer,
whose gradient is the sampled noise times e^-20) is reported apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]
from peer_side import preset  # noqa: E402

from mtrl.agents.factory import build_agent  # noqa: E402
from mtrl.batch import Batch  # noqa: E402

TASKS, ROWS = 10, 128


def deterministic_agent():
    torch.manual_seed(0)
    config = preset(["agent.hidden_sizes=[64,64]", "torch_threads=1", "compile=none"])
    agent = build_agent(config, [f"task{i}" for i in range(TASKS)], 39, 4)
    with torch.no_grad():
        head = agent.actor.mlp.layers[-1]
        head.weight[4:].zero_()
        head.bias[4:].fill_(-20.0)
        agent.log_alpha.fill_(-12.0)
    return agent


def fixed_batch() -> Batch:
    rng = np.random.default_rng(0)
    n = TASKS * ROWS
    return Batch(
        obs=torch.tensor(rng.normal(size=(n, 39)), dtype=torch.float32),
        action=torch.tensor(rng.uniform(-1, 1, (n, 4)), dtype=torch.float32),
        reward=torch.tensor(rng.uniform(0, 10, n), dtype=torch.float32),
        next_obs=torch.tensor(rng.normal(size=(n, 39)), dtype=torch.float32),
        terminated=torch.zeros(n),
        task_ids=torch.tensor(np.repeat(np.arange(TASKS), ROWS)),
        counts=(ROWS,) * TASKS,
    )


def parameters(agent) -> dict[str, np.ndarray]:
    out = {}
    for name, module in (("actor", agent.actor), ("critic", agent.critic), ("target", agent.critic_target)):
        out.update({f"{name}.{key}": value.detach().numpy().copy() for key, value in module.state_dict().items()})
    out["log_alpha"] = agent.log_alpha.detach().numpy().copy()
    return out


def run(agent, batch: Batch, updates: int) -> dict[str, np.ndarray | float]:
    """Losses and the pre-clip critic gradient norm before each update, the parameters after it."""
    out: dict[str, np.ndarray | float] = {}
    for step in range(updates):
        inputs = agent.critic_inputs(batch)
        loss = agent.critic_sample_loss(None, **inputs).mean()
        grads = torch.autograd.grad(loss, list(agent.critic.parameters()))
        out[f"qf_loss_{step}"] = loss.item()
        out[f"critic_grad_magnitude_{step}"] = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()
        metrics = agent.update(batch)
        out[f"actor_loss_{step}"] = metrics["actor_loss"].mean().item()
        out.update({f"p{step}.{key}": value for key, value in parameters(agent).items()})
    return out


def compare(ours: dict, peer: dict, updates: int) -> dict:
    rows = []
    for step in range(updates):
        row = {"update": step}
        for key in ("qf_loss", "critic_grad_magnitude", "actor_loss"):
            row[key] = {"mtrl": round(float(ours[f"{key}_{step}"]), 6), "peer": round(float(peer[f"{key}_{step}"]), 6)}
        diffs = {}
        for key in (k for k in peer if k.startswith(f"p{step}.")):
            a, b = np.asarray(ours[key]), np.asarray(peer[key])
            if key.endswith("actor.mlp.layers.2.weight"):
                diffs["actor head, mean rows"] = float(np.abs(a[:4] - b[:4]).max())
                diffs["actor head, log-std rows (noise)"] = float(np.abs(a[4:] - b[4:]).max())
            else:
                diffs[key.split(".", 1)[1]] = float(np.abs(a - b).max())
        row["max_abs_parameter_difference"] = diffs
        rows.append(row)
    return {"what": "benchmarks/peer_check: one-update cross-check with metaworld-algorithms MTSAC", "updates": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["export", "compare"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--updates", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    agent, batch = deterministic_agent(), fixed_batch()
    if args.mode == "export":
        args.out.mkdir(parents=True, exist_ok=True)
        arrays = {k: getattr(batch, k).numpy() for k in ("obs", "action", "reward", "next_obs")}
        np.savez(args.out / "init.npz", **parameters(agent), **arrays, task_ids=batch.task_ids.numpy())
        return
    peer = dict(np.load(args.out / "peer.npz"))
    print(json.dumps(compare(run(agent, batch, args.updates), peer, args.updates), indent=1))


if __name__ == "__main__":
    main()
