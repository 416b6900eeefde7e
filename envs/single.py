"""One Meta-World task as a gymnasium env: goal selection per episode and the protocol's horizon."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import gymnasium as gym
import metaworld
import numpy as np

from envs.goals import Goal


class GoalSelectingEnv(gym.Wrapper):
    """Sets one of the task's goals on every reset: "random", "fixed" (goal 0) or "cycle" (in order)."""

    def __init__(self, env: gym.Env, goals: list[Goal], mode: str, seed: int):
        super().__init__(env)
        if mode not in ("random", "fixed", "cycle"):
            raise ValueError(f"goal mode '{mode}' is not one of random, fixed, cycle")
        self.goals = goals
        self.mode = mode
        self.episode_index = 0
        self.goal_rng = np.random.default_rng(seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self.unwrapped.seed(seed)  # metaworld ignores reset(seed=...); seed its generators here
            self.goal_rng = np.random.default_rng(seed)
        if self.mode == "random":
            index = int(self.goal_rng.integers(len(self.goals)))
        elif self.mode == "cycle":
            index = self.episode_index % len(self.goals)
        else:
            index = 0
        self.episode_index += 1
        self.unwrapped.set_task(self.goals[index])
        obs, info = self.env.reset(options=options)
        info["goal_index"] = index
        return obs, info

    def restart_goal_cycle(self) -> None:
        """Start the goal cycle again from goal 0 (evaluation calls this before each evaluation)."""
        self.episode_index = 0


def make_task_env(
    task_name: str,
    goals: list[Goal],
    goal_mode: str,
    horizon: int,
    seed: int,
    render_mode: str | None = None,
    reward_version: str = "v2",
) -> gym.Env:
    """Build one task's env: metaworld env -> goal selection -> TimeLimit(horizon) (truncation only).

    `render_mode="rgb_array"` makes `env.render()` return frames (needs a GL backend, e.g. MUJOCO_GL=egl);
    `reward_version` picks Meta-World's v2 or v1 reward function of the task.
    """
    env = metaworld.ALL_V3_ENVIRONMENTS[task_name](render_mode=render_mode, reward_function_version=reward_version)
    env.seed(seed)
    env = GoalSelectingEnv(env, goals, goal_mode, seed)
    env = gym.wrappers.TimeLimit(env, max_episode_steps=horizon)
    env.action_space.seed(seed)
    return env


class TaskSlotEnv(gym.Env):
    """An env slot that runs a different task each episode, drawn at reset from pushed probabilities.

    Used when there are fewer env slots than tasks (e.g. MT50 on 10 slots driven by a curriculum).
    Task envs are built on first use and the `max_cached` most recently used are kept.
    """

    def __init__(
        self,
        task_names: list[str],
        goals: dict[str, list[Goal]],
        goal_mode: str,
        horizon: int,
        seed: int,
        max_cached: int = 8,
        reward_version: str = "v2",
    ):
        self.task_names, self.goals, self.goal_mode, self.horizon = task_names, goals, goal_mode, horizon
        self.reward_version = reward_version
        self.seed_base, self.max_cached = seed, max_cached
        self.rng = np.random.default_rng(seed)
        self.probabilities = np.full(len(task_names), 1.0 / len(task_names))
        self.cache: OrderedDict[int, gym.Env] = OrderedDict()
        self.current = 0
        first = self._env(0)
        self.observation_space = first.observation_space
        self.action_space = first.action_space

    def _env(self, task: int) -> gym.Env:
        if task not in self.cache:
            name = self.task_names[task]
            self.cache[task] = make_task_env(
                name,
                self.goals[name],
                self.goal_mode,
                self.horizon,
                self.seed_base + task,
                reward_version=self.reward_version,
            )
            while len(self.cache) > self.max_cached:
                self.cache.popitem(last=False)[1].close()
        self.cache.move_to_end(task)
        return self.cache[task]

    def set_task_probabilities(self, probabilities: np.ndarray) -> None:
        self.probabilities = np.asarray(probabilities, dtype=np.float64) / np.sum(probabilities)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.current = int(self.rng.choice(len(self.task_names), p=self.probabilities))
        obs, info = self._env(self.current).reset(options=options)
        info["task_id"] = self.current
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.cache[self.current].step(action)
        info["task_id"] = self.current
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        for env in self.cache.values():
            env.close()
        self.cache.clear()
