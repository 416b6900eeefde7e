"""A multi-task vector env (env slots running Meta-World tasks) that gets Meta-World's episode bookkeeping right.

- success of an episode is the max of the per-step success flag (the flag can drop back to 0);
- the horizon is truncation, not termination (the critic bootstraps through it);
- with same-step autoreset `StepResult.next_obs` holds the true final observation of a transition that
  ended an episode, while `StepResult.obs` is already the next episode's reset observation;
- `step` = `step_async` + `step_wait`, so a learner can update while the envs step (async mode);
- the training reward (`StepResult.reward`) may be normalised (`envs.normalization`); episode returns and
  success are always computed from the raw reward.

Slot layout with `envs_per_task = N` copies of K tasks: slot s = c * K + i runs copy c of task i, whose env is
built with seed `seed + i + 1000 * c` and is reset by `reset(seed=S)` with seed `S + i + 1000 * c`; with N = 1
these are the seeds one copy per task has always had (slot i: seed + i).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np

from envs.goals import Goal
from envs.group import Backend, InProcessEnvs
from envs.protocols import Protocol
from envs.single import TaskSlotEnv, make_task_env
from envs.workers import WorkerPool, resolve_vectorization
from mtrl import checks
from mtrl.errors import UserError

COPY_SEED_STRIDE = 1000  # copy c of a task is seeded 1000 * c above copy 0


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
    """What one vector step produced; `next_obs` is the transition's true next observation.

    Slots left out of a step (`active` False) were not stepped: their `obs` and `next_obs` are the unchanged
    observation, their rewards 0 and their flags false.
    """

    obs: np.ndarray  # (N, obs_dim) observations to act on next (reset obs where an episode ended)
    next_obs: np.ndarray  # (N, obs_dim) true next observations of this step's transitions
    reward: np.ndarray  # (N,) float32 training reward (normalised when reward normalisation is on)
    terminated: np.ndarray  # (N,) bool: a real terminal state (no bootstrap)
    truncated: np.ndarray  # (N,) bool: time limit (bootstrap through it)
    success: np.ndarray  # (N,) per-step success flag
    task_ids: np.ndarray  # (N,) task of each transition (a slot's task can change at an episode end)
    raw_reward: np.ndarray  # (N,) float64 reward as the env gave it (episode returns add these)
    episodes: list[EpisodeResult] = field(default_factory=list)


class MultiTaskVectorEnv:
    """Env slots over `task_names` with task ids, float32 observations and episode statistics.

    `env_fns[s]` builds slot s; `slot_tasks[s]` is its task (default s mod K). Slots built with `TaskSlotEnv`
    change task at episode ends and report it as `info["task_id"]`; `task_ids` always holds the task of each
    slot's current observation. `reset(seed=S)` resets slot s with seed `S + seed_offsets[s]` (default s).
    `vectorization` is sync (all envs in this process), async (`workers` processes, `envs.workers`) or auto
    (`envs.workers.resolve_vectorization`); `reward_normalization` scales each slot's training reward by its
    running std per task (`envs.normalization`).
    """

    def __init__(
        self,
        task_names: Sequence[str],
        env_fns: Sequence[Callable[[], gym.Env]],
        protocol: Protocol,
        seed: int,
        vectorization: str = "sync",
        *,
        workers: int | str = "auto",
        slot_tasks: Sequence[int] | None = None,
        seed_offsets: Sequence[int] | None = None,
        reward_normalization: bool = False,
    ):
        self.task_names = list(task_names)
        self.protocol = protocol
        self.seed = seed
        self.num_envs = len(env_fns)
        self.vectorization, self.workers = resolve_vectorization(vectorization, workers, self.num_envs)
        slots = np.arange(self.num_envs, dtype=np.int64)
        self.task_ids = slots % len(self.task_names) if slot_tasks is None else np.asarray(slot_tasks, np.int64)
        self.seed_offsets = slots if seed_offsets is None else np.asarray(seed_offsets, np.int64)
        self.reward_normalization = bool(reward_normalization)
        if self.vectorization == "sync":
            self.vector_env: Backend = InProcessEnvs(env_fns, self.task_ids, self.reward_normalization)
        else:
            self.vector_env = WorkerPool(env_fns, self.task_ids, self.reward_normalization, self.workers)
        self.single_action_space = self.vector_env.single_action_space
        self.obs_dim = int(np.prod(self.vector_env.single_observation_space.shape))
        self.act_dim = int(np.prod(self.single_action_space.shape))
        self.action_rng = np.random.default_rng(seed)
        self._returns = np.zeros(self.num_envs)
        self._success = np.zeros(self.num_envs, dtype=bool)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._pending: tuple[np.ndarray, np.ndarray] | None = None  # (task ids, active) of a started step

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every slot (slot s with seed + seed_offsets[s] when a seed is given); clear episode statistics."""
        if self._pending is not None:
            self.step_wait()
        seeds = [None] * self.num_envs if seed is None else [int(seed + o) for o in self.seed_offsets]
        self.vector_env.run("reset", per_env=seeds)
        self.task_ids = self.vector_env.buffers.task_id.copy()
        self._returns[:] = 0.0
        self._success[:] = False
        self._lengths[:] = 0
        return self.vector_env.buffers.obs.copy()

    def random_actions(self) -> np.ndarray:
        """Uniform random actions for every slot, from this env's own seeded generator."""
        low, high = self.single_action_space.low, self.single_action_space.high
        return self.action_rng.uniform(low, high, size=(self.num_envs, self.act_dim)).astype(np.float32)

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> StepResult:
        """Step every slot (or only the `active` ones), returning the transitions and the episodes that ended."""
        self.step_async(actions, active)
        return self.step_wait()

    def step_async(self, actions: np.ndarray, active: np.ndarray | None = None) -> None:
        """Start a step (`actions`: (N, act_dim)); in async mode the envs step while the caller works on.

        `active` (N,) bool selects the slots to step (default all). Collect the result with `step_wait`.
        """
        if self._pending is not None:
            raise RuntimeError("step_async called twice; call step_wait for the step already started")
        buffers = self.vector_env.buffers
        buffers.actions[:] = np.asarray(actions).reshape(self.num_envs, self.act_dim)
        buffers.active[:] = True if active is None else np.asarray(active, dtype=bool)
        self._pending = (self.task_ids.copy(), buffers.active.copy())
        self.vector_env.step_async()

    def step_wait(self) -> StepResult:
        """Finish the step started by `step_async` and return its `StepResult`."""
        if self._pending is None:
            raise RuntimeError("step_wait called without step_async")
        task_ids, active = self._pending
        self._pending = None
        self.vector_env.step_wait()
        b = self.vector_env.buffers
        self.task_ids = b.task_id.copy()
        done = b.terminated | b.truncated
        self._returns += b.raw_reward
        self._success |= b.success
        self._lengths += active
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
            obs=b.obs.copy(),
            next_obs=b.next_obs.copy(),
            reward=b.reward.astype(np.float32),
            terminated=b.terminated.copy(),
            truncated=b.truncated.copy(),
            success=b.success.copy(),
            task_ids=task_ids,
            raw_reward=b.raw_reward.copy(),
            episodes=episodes,
        )

    def call(self, name: str, *args: Any) -> list[Any]:
        """Per slot: `env.<name>(*args)` on its gymnasium env (found through the wrappers)."""
        return self.vector_env.call(name, *args)

    def set_task_probabilities(self, probabilities: np.ndarray) -> None:
        """Task-switching slots draw their next episode's task from these probabilities."""
        self.call("set_task_probabilities", np.asarray(probabilities, dtype=np.float64))

    def restart_goal_cycle(self) -> None:
        """Restart every slot's goal cycle at goal 0 (used before an evaluation)."""
        self.call("restart_goal_cycle")

    def set_end_on_success(self, on: bool) -> None:
        """End every episode at its first successful step (as truncation), or run it to the horizon (default)."""
        self.vector_env.run("set_end_on_success", bool(on))

    def normalizer_state(self) -> list[dict[int, dict[str, float]]] | None:
        """Per slot {task id: reward statistic} (for checkpoints), or None when reward normalisation is off."""
        if not self.reward_normalization:
            return None
        return self.vector_env.run("normalizer_state")

    def load_normalizer_state(self, state: list[dict[int, dict[str, float]]] | None) -> None:
        """Restore `normalizer_state()`'s value; None restores nothing (a run without normalisation)."""
        if state is None:
            return
        if not self.reward_normalization:
            raise UserError(
                "the checkpoint has a reward normaliser but env.reward_normalization is off; "
                "set env.reward_normalization=true to resume it"
            )
        if len(state) != self.num_envs:
            raise UserError(
                f"the checkpoint's reward normaliser has {len(state)} env slots; this env has "
                f"{self.num_envs} (env.envs_per_task or env.slots changed?)"
            )
        self.vector_env.run("load_normalizer_state", per_env=state)

    def close(self) -> None:
        self._pending = None
        self.vector_env.close()


def make_vector_env(
    task_names: Sequence[str],
    goals: dict[str, list[Goal]],
    protocol: Protocol,
    seed: int,
    *,
    evaluation: bool = False,
    vectorization: str = "sync",
    workers: int | str = "auto",
    slots: int | None = None,
    envs_per_task: int = 1,
    reward_normalization: bool = False,
    render_mode: str | None = None,
    reward_version: str = "v2",
) -> MultiTaskVectorEnv:
    """Build the training (goals per protocol.train_goals) or evaluation (protocol.eval_goals) vector env.

    Training: `envs_per_task` copies of every task (layout and seeds in the module doc), or, with `slots`
    (fewer env slots than tasks), slots that switch task at episode ends (one env each); rewards normalised
    when `reward_normalization`. Evaluation: always one slot per task, raw rewards.
    `render_mode="rgb_array"` lets every task env render frames, for videos; `reward_version`: v2 or v1 rewards.
    """
    mode = protocol.eval_goals if evaluation else protocol.train_goals
    goals = {name: goals[name][: protocol.goals_per_task] for name in task_names}
    if evaluation:
        slots, envs_per_task, reward_normalization = None, 1, False
    if slots is None:
        env_fns, layout = _copy_env_fns(
            task_names, goals, mode, protocol.horizon, seed, envs_per_task, render_mode, reward_version
        )
    else:
        if envs_per_task != 1:
            raise checks.fail(
                "env.envs_per_task", envs_per_task, "1 when env.slots is set (a task-switching slot runs one env)"
            )
        env_fns = [
            partial(
                TaskSlotEnv,
                list(task_names),
                goals,
                mode,
                protocol.horizon,
                seed + 1000 * i,
                reward_version=reward_version,
            )
            for i in range(slots)
        ]
        layout = {}
    return MultiTaskVectorEnv(
        task_names,
        env_fns,
        protocol,
        seed,
        vectorization,
        workers=workers,
        reward_normalization=reward_normalization,
        **layout,
    )


def _copy_env_fns(
    task_names: Sequence[str],
    goals: dict[str, list[Goal]],
    mode: str,
    horizon: int,
    seed: int,
    envs_per_task: int,
    render_mode: str | None,
    reward_version: str,
) -> tuple[list[Callable[[], gym.Env]], dict]:
    """Env builders of `envs_per_task` copies of every task (slot c*K + i is copy c of task i, seeded
    seed + i + COPY_SEED_STRIDE * c) and the vector env's layout arguments (slot tasks, seed offsets)."""
    k = len(task_names)
    offsets = [i + COPY_SEED_STRIDE * c for c in range(envs_per_task) for i in range(k)]
    slot_tasks = [i for _ in range(envs_per_task) for i in range(k)]
    env_fns = [
        partial(
            make_task_env,
            task_names[i],
            goals[task_names[i]],
            mode,
            horizon,
            seed + offset,
            render_mode=render_mode,
            reward_version=reward_version,
        )
        for i, offset in zip(slot_tasks, offsets)
    ]
    return env_fns, {"slot_tasks": slot_tasks, "seed_offsets": offsets}
