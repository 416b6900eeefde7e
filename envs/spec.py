"""An environment spec built from the `env` config: tasks, protocol, goals; recorded in every run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from envs.goals import Goal, make_goals
from envs.protocols import Protocol, get_protocol
from envs.tasks import resolve_tasks
from envs.vector import MultiTaskVectorEnv, make_vector_env
from mtrl.errors import UserError

ENV_KEYS = ("tasks", "protocol", "horizon", "goal_seed", "vectorization", "slots")


@dataclass
class EnvSpec:
    """Which tasks, under which protocol, with which goals: everything needed to rebuild the envs."""

    benchmark: str
    task_names: list[str]
    protocol: Protocol
    goal_seed: int
    vectorization: str
    goals: dict[str, list[Goal]]
    slots: int | None = None  # training env slots when fewer than tasks (tasks switch at episode ends)

    def make(self, seed: int, evaluation: bool = False, render_mode: str | None = None) -> MultiTaskVectorEnv:
        """The training env (with `slots` if set) or the evaluation env (always one slot per task).

        `render_mode="rgb_array"` builds envs that render frames (video recording of evaluations).
        """
        return make_vector_env(self.task_names, self.goals, self.protocol, seed, evaluation=evaluation,
                               vectorization=self.vectorization, slots=None if evaluation else self.slots,
                               render_mode=render_mode)

    def describe(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "tasks": self.task_names, "protocol": self.protocol.to_dict(),
                "goal_seed": self.goal_seed}


def build_env_spec(env_cfg: Mapping[str, Any], seed: int) -> EnvSpec:
    """Resolve tasks and protocol from the env config and generate Meta-World's goals."""
    unknown = sorted(set(env_cfg) - set(ENV_KEYS))
    if unknown:
        raise UserError(f"unknown env option(s) {', '.join(unknown)}; allowed: {', '.join(ENV_KEYS)}")
    benchmark, task_names = resolve_tasks(env_cfg["tasks"])
    protocol = get_protocol(env_cfg.get("protocol", "metaworld"), env_cfg.get("horizon"))
    goal_seed = env_cfg.get("goal_seed")
    goal_seed = seed if goal_seed is None else goal_seed
    if not isinstance(goal_seed, int) or goal_seed < 0:
        raise UserError(f"env.goal_seed={goal_seed} is not allowed; expected null or an integer >= 0")
    vectorization = env_cfg.get("vectorization", "sync")
    if vectorization not in ("sync", "async"):
        raise UserError(f"env.vectorization='{vectorization}' is not allowed; use sync or async")
    slots = env_cfg.get("slots")
    if slots is not None and (not isinstance(slots, int) or not 1 <= slots <= len(task_names)):
        raise UserError(f"env.slots={slots} is not allowed; expected null (one slot per task) or 1..{len(task_names)}")
    goals = make_goals(benchmark, task_names, goal_seed)
    return EnvSpec(benchmark, task_names, protocol, goal_seed, vectorization, goals,
                   None if slots == len(task_names) else slots)
