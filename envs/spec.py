"""An environment spec built from the `env` config: tasks, protocol, goals; recorded in every run."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping

from envs.goals import Goal, make_goals
from envs.protocols import Protocol, get_protocol
from envs.tasks import resolve_tasks
from envs.vector import COPY_SEED_STRIDE, MultiTaskVectorEnv, make_vector_env
from envs.workers import resolve_vectorization
from mtrl import checks

ENV_KEYS = (
    "tasks",
    "protocol",
    "horizon",
    "goal_seed",
    "vectorization",
    "workers",
    "envs_per_task",
    "slots",
    "reward_normalization",
    "reward_version",
    "fixed_goal",
)
#: Meta-World's reward functions: v2 (its default) or v1 (the functions of the -v1 tasks, as in metaworld 3).
REWARD_VERSIONS = ("v2", "v1")
#: Which of a task's goals a fixed-goal protocol (mtrl) uses: the first, or one drawn per task from the goal seed
#: with Python's random, as facebookresearch/mtenv draws it (mtenv/envs/metaworld/env.py:102-116).
FIXED_GOALS = ("first", "seeded")


@dataclass
class EnvSpec:
    """Which tasks, under which protocol, with which goals: everything needed to rebuild the envs."""

    benchmark: str
    task_names: list[str]
    protocol: Protocol
    goal_seed: int
    vectorization: str  # auto, sync or async (auto is resolved per machine when envs are made)
    goals: dict[str, list[Goal]]
    slots: int | None = None  # training env slots when fewer than tasks (tasks switch at episode ends)
    envs_per_task: int = 1  # training env copies of every task
    workers: int | str = "auto"  # async worker processes
    reward_normalization: bool = False  # training rewards / running std per task and copy (resolved)
    reward_version: str = "v2"  # Meta-World's reward functions, v2 or v1
    fixed_goal: str = "first"  # fixed-goal protocols: goal 0, or one drawn from the goal seed (mtenv)

    def make(self, seed: int, evaluation: bool = False, render_mode: str | None = None) -> MultiTaskVectorEnv:
        """The training env (copies, slots and reward normalisation as set) or the evaluation env (one slot per
        task, raw rewards). `render_mode="rgb_array"` builds envs that render frames (videos of evaluations).
        """
        return make_vector_env(
            self.task_names,
            self.goals,
            self.protocol,
            seed,
            evaluation=evaluation,
            vectorization=self.vectorization,
            workers=self.workers,
            slots=self.slots,
            envs_per_task=self.envs_per_task,
            reward_normalization=self.reward_normalization,
            render_mode=render_mode,
            reward_version=self.reward_version,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "tasks": self.task_names,
            "protocol": self.protocol.to_dict(),
            "goal_seed": self.goal_seed,
            "envs_per_task": self.envs_per_task,
            "slots": self.slots,
            "reward_normalization": self.reward_normalization,
            "reward_version": self.reward_version,
            "fixed_goal": self.fixed_goal,
        }


def build_env_spec(env_cfg: Mapping[str, Any], seed: int) -> EnvSpec:
    """Resolve tasks and protocol from the env config (a plain mapping), check its values, make the goals."""
    checks.unknown_keys("env.", list(env_cfg), ENV_KEYS)
    benchmark, task_names = resolve_tasks(env_cfg["tasks"])
    protocol = get_protocol(env_cfg.get("protocol", "metaworld"), env_cfg.get("horizon"))
    goal_seed = env_cfg.get("goal_seed")
    goal_seed = seed if goal_seed is None else checks.integer("env.goal_seed", goal_seed, 0)
    vectorization = checks.choice("env.vectorization", env_cfg.get("vectorization", "auto"), ("auto", "sync", "async"))
    workers = env_cfg.get("workers", "auto")
    if workers != "auto":
        workers = checks.integer("env.workers", workers, 1)
    resolve_vectorization(vectorization, workers, 1, cores=1)  # refuses workers=<n> with vectorization=sync
    envs_per_task = checks.integer("env.envs_per_task", env_cfg.get("envs_per_task", 1), 1, COPY_SEED_STRIDE - 1)
    slots = env_cfg.get("slots")
    if slots is not None:
        slots = checks.integer("env.slots", slots, 1, len(task_names))
        slots = None if slots == len(task_names) else slots
    if slots is not None and envs_per_task != 1:
        raise checks.fail(
            "env.envs_per_task", envs_per_task, "1 when env.slots is set (a task-switching slot runs one env)"
        )
    normalize = env_cfg.get("reward_normalization")
    normalize = (
        protocol.reward_normalization if normalize is None else checks.flag("env.reward_normalization", normalize)
    )
    reward_version = checks.choice("env.reward_version", env_cfg.get("reward_version", "v2"), REWARD_VERSIONS)
    fixed_goal = checks.choice("env.fixed_goal", env_cfg.get("fixed_goal", "first"), FIXED_GOALS)
    if fixed_goal == "seeded" and protocol.train_goals != "fixed":
        raise checks.fail("env.fixed_goal", fixed_goal, f"first under env.protocol={protocol.name} (its goals vary)")
    goals = make_goals(benchmark, task_names, goal_seed)
    if fixed_goal == "seeded":
        goals = seeded_goal_first(goals, goal_seed)
    return EnvSpec(
        benchmark,
        task_names,
        protocol,
        goal_seed,
        vectorization,
        goals,
        slots,
        envs_per_task,
        workers,
        normalize,
        reward_version,
        fixed_goal,
    )


def seeded_goal_first(goals: dict[str, list[Goal]], seed: int) -> dict[str, list[Goal]]:
    """Each task's goals with one drawn goal moved first (a fixed-goal protocol uses the first): one
    `random.choice` per task in task order from Python's random seeded by `seed`, as mtenv draws them."""
    rng = random.Random(seed)
    out = {}
    for name, task_goals in goals.items():
        index = rng.choice(range(len(task_goals)))
        out[name] = [task_goals[index], *task_goals[:index], *task_goals[index + 1 :]]
    return out
