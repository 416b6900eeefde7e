"""A multi-task vector env (one sub-env per task slot) that gets Meta-World's episode bookkeeping right.

- success of an episode is the max of the per-step success flag (the flag can drop back to 0);
- the horizon is truncation, not termination (the critic bootstraps through it);
- with same-step autoreset the true final observation arrives in `info["final_obs"]`: it is what
  `StepResult.next_obs` holds for the transition, while `StepResult.obs` is the reset observation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

import gymnasium as gym
import numpy as np

from envs.goals import Goal
from envs.protocols import Protocol
from envs.single import TaskSlotEnv, make_task_env
from mtrl.errors import UserError


@dataclass
class EpisodeResult:
    """One finished episode of one task."""

    task_id: int
    task_name: str
    ret: float
    success: bool
    length: int


@dataclass
class StepResult:
    """What one vector step produced; `next_obs` is the transition's true next observation."""

    obs: np.ndarray  # (N, obs_dim) observations to act on next (reset obs where an episode ended)
    next_obs: np.ndarray  # (N, obs_dim) true next observations of this step's transitions
    reward: np.ndarray  # (N,)
    terminated: np.ndarray  # (N,) bool: a real terminal state (no bootstrap)
    truncated: np.ndarray  # (N,) bool: time limit (bootstrap through it)
    success: np.ndarray  # (N,) per-step success flag
    task_ids: np.ndarray  # (N,) task of each transition (a slot's task can change at an episode end)
    episodes: list[EpisodeResult] = field(default_factory=list)


class MultiTaskVectorEnv:
    """One gymnasium vector env over env slots, with task ids, float32 observations and episode stats.

    Usually slot i runs task i. Slots built with `TaskSlotEnv` change task at episode ends and report
    it as `info["task_id"]`; `task_ids` always holds the task of each slot's current observation.
    """

    def __init__(
        self,
        task_names: Sequence[str],
        env_fns: Sequence[Callable[[], gym.Env]],
        protocol: Protocol,
        seed: int,
        vectorization: str = "sync",
    ):
        if vectorization not in ("sync", "async"):
            raise UserError(f"env.vectorization='{vectorization}' is not allowed; use sync or async")
        self.task_names = list(task_names)
        self.protocol = protocol
        self.seed = seed
        vec_cls = gym.vector.SyncVectorEnv if vectorization == "sync" else gym.vector.AsyncVectorEnv
        self.vector_env = vec_cls(list(env_fns), autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        self.num_envs = len(env_fns)
        self.task_ids = np.arange(self.num_envs, dtype=np.int64) % len(self.task_names)
        self.single_action_space = self.vector_env.single_action_space
        self.obs_dim = int(np.prod(self.vector_env.single_observation_space.shape))
        self.act_dim = int(np.prod(self.single_action_space.shape))
        self.action_rng = np.random.default_rng(seed)
        self._returns = np.zeros(self.num_envs)
        self._success = np.zeros(self.num_envs, dtype=bool)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every slot (seeding slot i with seed + i when given) and clear episode statistics."""
        obs, info = self.vector_env.reset(seed=seed)
        self._update_task_ids(info)
        self._returns[:] = 0.0
        self._success[:] = False
        self._lengths[:] = 0
        return obs.astype(np.float32)

    def random_actions(self) -> np.ndarray:
        """Uniform random actions for every slot, from this env's own seeded generator."""
        low, high = self.single_action_space.low, self.single_action_space.high
        return self.action_rng.uniform(low, high, size=(self.num_envs, self.act_dim)).astype(np.float32)

    def step(self, actions: np.ndarray) -> StepResult:
        """Step every slot, returning the transition data and the episodes that ended on this step."""
        obs, reward, terminated, truncated, info = self.vector_env.step(actions)
        task_ids = self.task_ids.copy()
        self._update_task_ids(info)
        done = terminated | truncated
        next_obs = obs.copy()
        success = np.asarray(info.get("success", np.zeros(self.num_envs)), dtype=np.float64).copy()
        if done.any():
            final_info = info["final_info"]
            for i in np.flatnonzero(done):
                next_obs[i] = info["final_obs"][i]
                success[i] = final_info["success"][i]
        success = success > 0.5
        self._returns += reward
        self._success |= success
        self._lengths += 1
        episodes = [
            EpisodeResult(
                int(task_ids[i]),
                self.task_names[task_ids[i]],
                float(self._returns[i]),
                bool(self._success[i]),
                int(self._lengths[i]),
            )
            for i in np.flatnonzero(done)
        ]
        self._returns[done] = 0.0
        self._success[done] = False
        self._lengths[done] = 0
        return StepResult(
            obs=obs.astype(np.float32),
            next_obs=next_obs.astype(np.float32),
            reward=reward.astype(np.float32),
            terminated=terminated.astype(bool),
            truncated=truncated.astype(bool),
            success=success,
            task_ids=task_ids,
            episodes=episodes,
        )

    def _update_task_ids(self, info: dict) -> None:
        if "task_id" in info:
            self.task_ids = np.asarray(info["task_id"], dtype=np.int64).copy()

    def set_task_probabilities(self, probabilities: np.ndarray) -> None:
        """Task-switching slots draw their next episode's task from these probabilities."""
        self.vector_env.call("set_task_probabilities", np.asarray(probabilities, dtype=np.float64))

    def restart_goal_cycle(self) -> None:
        """Restart every slot's goal cycle at goal 0 (used before an evaluation)."""
        self.vector_env.call("restart_goal_cycle")

    def close(self) -> None:
        self.vector_env.close()


def make_vector_env(
    task_names: Sequence[str],
    goals: dict[str, list[Goal]],
    protocol: Protocol,
    seed: int,
    *,
    evaluation: bool = False,
    vectorization: str = "sync",
    slots: int | None = None,
    render_mode: str | None = None,
) -> MultiTaskVectorEnv:
    """Build the training (goals per protocol.train_goals) or evaluation (protocol.eval_goals) vector env.

    With `slots` (fewer env slots than tasks) each slot switches task at episode ends; otherwise slot i is task i.
    `render_mode="rgb_array"` (one slot per task only) lets every task env render frames, for videos.
    """
    mode = protocol.eval_goals if evaluation else protocol.train_goals
    goals = {name: goals[name][: protocol.goals_per_task] for name in task_names}
    if slots is None:
        env_fns = [partial(make_task_env, name, goals[name], mode, protocol.horizon, seed + i, render_mode=render_mode)
                   for i, name in enumerate(task_names)]
    else:
        env_fns = [partial(TaskSlotEnv, list(task_names), goals, mode, protocol.horizon, seed + 1000 * i)
                   for i in range(slots)]
    return MultiTaskVectorEnv(task_names, env_fns, protocol, seed, vectorization)
