"""One-update cross-check, the reference's side (run in the peer venv of ../shared/peer/setup.sh); see mtrl_side.py.

    /tmp/mwalgo-venv/bin/python benchmarks/peer_check/reference_side.py OUT_DIR [--updates 3]

Loads OUT_DIR/init.npz (mtrl's weights and batch) into metaworld-algorithms' MTSAC of the MT10 MTSAC example at
2 x 64 (built by the harness's `make_configs`), runs `--updates` of its jitted updates on that batch and writes
its losses, critic gradient norms and parameters to OUT_DIR/peer.npz, named as mtrl names them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

HARNESS = Path(os.environ.get("PEER_HARNESS", Path(__file__).resolve().parents[3] / "shared" / "peer"))
sys.path.insert(0, str(HARNESS))
from metaworld_algorithms.types import ReplayBufferSamples  # noqa: E402
from peer_bench import make_configs  # noqa: E402

TASKS = 10


def actor_tree(d) -> dict:
    layers = {
        f"layer_{i}": {
            "kernel": jnp.asarray(d[f"actor.mlp.layers.{i}.weight"].T),
            "bias": d[f"actor.mlp.layers.{i}.bias"],
        }
        for i in range(3)
    }
    return {"params": {"ContinuousActionPolicyTorso_0": {"VanillaNetwork_0": {"MLP_0": layers}}}}


def to_peer_rows(kernel: np.ndarray) -> np.ndarray:
    """mtrl's first critic layer reads [obs 39, action 4, one-hot 10]; the peer's [action 4, obs 39, one-hot 10]."""
    return np.concatenate([kernel[39:43], kernel[:39], kernel[43:]])


def from_peer_rows(kernel: np.ndarray) -> np.ndarray:
    return np.concatenate([kernel[4:43], kernel[:4], kernel[43:]])


def critic_tree(d, prefix: str) -> dict:
    layers = {}
    for i in range(3):
        kernels = [d[f"{prefix}.{q}.mlp.layers.{i}.weight"].T for q in ("q1", "q2")]
        kernels = [to_peer_rows(k) if i == 0 else k for k in kernels]
        biases = [d[f"{prefix}.{q}.mlp.layers.{i}.bias"] for q in ("q1", "q2")]
        layers[f"layer_{i}"] = {"kernel": jnp.asarray(np.stack(kernels)), "bias": jnp.asarray(np.stack(biases))}
    return {"params": {"VmapQValueFunction_0": {"VanillaNetwork_0": {"MLP_0": layers}}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--updates", type=int, default=3)
    args = parser.parse_args()
    d = np.load(args.out / "init.npz")
    env_cfg, algo_cfg, _ = make_configs([64, 64], 10, 10)
    algo = algo_cfg.spawn(env_cfg, seed=1)
    actor, critic = actor_tree(d), critic_tree(d, "critic")
    alpha = {"params": {"log_alpha": jnp.asarray(d["log_alpha"])}}
    algo = algo.replace(
        actor=algo.actor.replace(params=actor, opt_state=algo.actor.tx.init(actor)),
        critic=algo.critic.replace(
            params=critic, target_params=critic_tree(d, "target"), opt_state=algo.critic.tx.init(critic)
        ),
        alpha=algo.alpha.replace(params=alpha, opt_state=algo.alpha.tx.init(alpha)),
    )
    onehot = np.eye(TASKS, dtype=np.float32)[d["task_ids"]]
    data = ReplayBufferSamples(
        observations=jnp.asarray(np.concatenate([d["obs"], onehot], 1)),
        actions=jnp.asarray(d["action"]),
        next_observations=jnp.asarray(np.concatenate([d["next_obs"], onehot], 1)),
        dones=jnp.zeros((len(onehot), 1)),
        rewards=jnp.asarray(d["reward"][:, None]),
    )
    out = {}
    for step in range(args.updates):
        algo, logs = algo.update(data)
        for key in ("losses/qf_loss", "metrics/critic_grad_magnitude", "losses/actor_loss"):
            out[f"{key.split('/')[1]}_{step}"] = float(logs[key])
        actor_layers = algo.actor.params["params"]["ContinuousActionPolicyTorso_0"]["VanillaNetwork_0"]["MLP_0"]
        critic_layers = algo.critic.params["params"]["VmapQValueFunction_0"]["VanillaNetwork_0"]["MLP_0"]
        for i in range(3):
            out[f"p{step}.actor.mlp.layers.{i}.weight"] = np.asarray(actor_layers[f"layer_{i}"]["kernel"]).T
            for j, q in enumerate(("q1", "q2")):
                kernel = np.asarray(critic_layers[f"layer_{i}"]["kernel"][j])
                out[f"p{step}.critic.{q}.mlp.layers.{i}.weight"] = (from_peer_rows(kernel) if i == 0 else kernel).T
        out[f"p{step}.log_alpha"] = np.asarray(algo.alpha.params["params"]["log_alpha"])
    np.savez(args.out / "peer.npz", **out)


if __name__ == "__main__":
    main()
