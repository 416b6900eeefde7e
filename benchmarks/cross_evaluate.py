"""Evaluate an mtrl checkpoint with Meta-World's own evaluator, as the Meta-World+ reference evaluates.

    python benchmarks/cross_evaluate.py RUN_DIR_OR_CHECKPOINT [--episodes 10] [--seed 1]

Runs `metaworld.evaluation.evaluation` (deterministic actions, episodes end at the first success, the success
flag of each episode's last step) on `gym.make_vec("Meta-World/MT10")` (one-hot task ids appended, 50 goals
re-drawn at every reset), the reference's evaluation env, with the checkpoint's acting policy. Its figure
checks mtrl's own evaluation (`evaluate.py`) on the same policy: docs/presets.md, "What still differs".
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gymnasium as gym
import metaworld  # noqa: F401  (registers the Meta-World/* vector envs)
import numpy as np
from metaworld.evaluation import evaluation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from envs.tasks import BENCHMARKS, OBS_DIM  # noqa: E402
from mtrl.agents.factory import load_policy  # noqa: E402


class MetaWorldAgent:
    """metaworld.evaluation's agent protocol over an mtrl acting policy (task id = argmax of the one-hot)."""

    def __init__(self, loaded):
        self.loaded = loaded

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        ids = observations[:, OBS_DIM:].argmax(1)
        return self.loaded.policy.act(observations[:, :OBS_DIM].astype(np.float32), ids, deterministic=True)

    def reset(self, env_mask: np.ndarray) -> None:
        """The policy has no memory: nothing to reset."""


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    loaded = load_policy(args.checkpoint, device="cpu")
    benchmark = {tuple(tasks): name for name, tasks in BENCHMARKS.items()}.get(tuple(loaded.task_names))
    if benchmark is None:
        raise SystemExit(f"error: the checkpoint's tasks are not a Meta-World benchmark: {loaded.task_names}")
    envs = gym.make_vec(
        f"Meta-World/{benchmark.upper()}",
        seed=args.seed,
        use_one_hot=True,
        terminate_on_success=False,
        vector_strategy="sync",
        max_episode_steps=500,
        num_goals=50,
    )
    try:
        mean, mean_return, per_task, _ = evaluation(MetaWorldAgent(loaded), envs, num_episodes=args.episodes)
    finally:
        envs.close()
    return {
        "what": "mtrl checkpoint under metaworld.evaluation.evaluation",
        "checkpoint": str(loaded.file),
        "episodes_per_task": args.episodes,
        "seed": args.seed,
        "mean_success": round(mean, 4),
        "mean_return": round(mean_return, 2),
        "success_per_task": {task: round(float(rate), 3) for task, rate in sorted(per_task.items())},
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
