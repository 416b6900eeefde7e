"""One Meta-World task as a gymnasium env: goal selection per episode and the protocol's horizon."""

from __future__ import annotations

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


def make_task_env(task_name: str, goals: list[Goal], goal_mode: str, horizon: int, seed: int) -> gym.Env:
    """Build one task's env: metaworld env -> goal selection -> TimeLimit(horizon) (truncation only)."""
    env = metaworld.ALL_V3_ENVIRONMENTS[task_name]()
    env.seed(seed)
    env = GoalSelectingEnv(env, goals, goal_mode, seed)
    env = gym.wrappers.TimeLimit(env, max_episode_steps=horizon)
    env.action_space.seed(seed)
    return env

