"""A group of task envs stepped in turn, writing into flat per-env arrays; the one stepping code of both modes.

Sync vectorisation holds one `EnvGroup` of every env in the learner's process (`InProcessEnvs`); async
vectorisation runs one group per worker process over a slice of shared-memory arrays (`envs.workers`).
Because both modes run this code on the same arrays, they produce the same numbers.

A step, per env whose `active` flag is set: step with its action; record the true next observation, the raw
reward and the training reward (scaled by the env's `RewardScale` per task when normalisation is on),
terminated/truncated and the per-step success flag; if the episode ended (or succeeded while
`end_on_success` is set, which then counts as truncation), reset at once (same-step autoreset) so that
`obs` holds the next episode's first observation. Inactive envs are not stepped: their `obs` stays, their
`next_obs` is `obs`, their reward is 0 and their flags are false.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np

from envs.normalization import RewardScale


@dataclass
class StepBuffers:
    """Per-env arrays (row = env) that a step reads (`actions`, `active`) and writes (the rest)."""

    actions: np.ndarray  # (n, act_dim), the action space's dtype
    active: np.ndarray  # (n,) bool: step this env
    obs: np.ndarray  # (n, obs_dim) float32: observation to act on next (the reset one after an episode end)
    next_obs: np.ndarray  # (n, obs_dim) float32: the step's true next observation
    reward: np.ndarray  # (n,) float64: training reward (normalised when normalisation is on)
    raw_reward: np.ndarray  # (n,) float64: the env's own reward
    terminated: np.ndarray  # (n,) bool
    truncated: np.ndarray  # (n,) bool
    success: np.ndarray  # (n,) bool: the step's success flag
    task_id: np.ndarray  # (n,) int64: task of the episode `obs` belongs to

    def rows(self, start: int, stop: int) -> "StepBuffers":
        """Views of rows [start, stop) (one worker's slice)."""
        return StepBuffers(*(getattr(self, f.name)[start:stop] for f in fields(self)))


@dataclass(frozen=True)
class BufferLayout:
    """Where each `StepBuffers` array lives in one flat byte block (picklable, sent to the workers)."""

    num_envs: int
    obs_dim: int
    act_dim: int
    act_dtype: str

    def _arrays(self) -> list[tuple[tuple[int, ...], np.dtype]]:
        n, rows, scalar = self.num_envs, (self.num_envs, self.obs_dim), (self.num_envs,)
        return [
            ((n, self.act_dim), np.dtype(self.act_dtype)),
            (scalar, np.dtype(bool)),
            (rows, np.dtype(np.float32)),
            (rows, np.dtype(np.float32)),
            (scalar, np.dtype(np.float64)),
            (scalar, np.dtype(np.float64)),
            (scalar, np.dtype(bool)),
            (scalar, np.dtype(bool)),
            (scalar, np.dtype(bool)),
            (scalar, np.dtype(np.int64)),
        ]

    def _offsets(self) -> tuple[list[int], int]:
        offsets, end = [], 0
        for shape, dtype in self._arrays():
            offsets.append(end)
            end += -(-int(np.prod(shape)) * dtype.itemsize // 8) * 8  # keep every array 8-byte aligned
        return offsets, end

    @property
    def nbytes(self) -> int:
        return self._offsets()[1]

    def view(self, block: Any) -> StepBuffers:
        """`StepBuffers` whose arrays are views into `block` (any writable buffer of `nbytes` bytes)."""
        offsets, _ = self._offsets()
        arrays = [
            np.frombuffer(block, dtype, int(np.prod(shape)), offset).reshape(shape)
            for (shape, dtype), offset in zip(self._arrays(), offsets)
        ]
        return StepBuffers(*arrays)

    @classmethod
    def for_env(cls, env: gym.Env, num_envs: int) -> "BufferLayout":
        """The layout for `num_envs` envs like `env` (flat Box observations and actions)."""
        return cls(
            num_envs,
            int(np.prod(env.observation_space.shape)),
            int(np.prod(env.action_space.shape)),
            np.dtype(env.action_space.dtype).str,
        )


class EnvGroup:
    """Envs stepped in turn with same-step autoreset, reading and writing `buffers` (see the module doc)."""

    def __init__(self, envs: Sequence[gym.Env], buffers: StepBuffers, normalize: bool):
        self.envs = list(envs)
        self.buffers = buffers
        # One reward statistic per env and task (a task-switching slot keeps one per task it has run).
        self.scales: list[dict[int, RewardScale]] | None = [{} for _ in self.envs] if normalize else None
        self.end_on_success = False

    def reset(self, seeds: Sequence[int | None]) -> None:
        """Reset every env (env j with `seeds[j]`)."""
        b = self.buffers
        for j, (env, seed) in enumerate(zip(self.envs, seeds, strict=True)):
            obs, info = env.reset(seed=seed)
            b.obs[j] = obs
            b.task_id[j] = info.get("task_id", b.task_id[j])

    def step(self) -> None:
        """Step the active envs with `buffers.actions` (module doc)."""
        b = self.buffers
        for j, env in enumerate(self.envs):
            if not b.active[j]:
                b.next_obs[j] = b.obs[j]
                b.reward[j] = b.raw_reward[j] = 0.0
                b.terminated[j] = b.truncated[j] = b.success[j] = False
                continue
            obs, reward, terminated, truncated, info = env.step(b.actions[j])
            success = float(info.get("success", 0.0)) > 0.5
            truncated = bool(truncated) or (self.end_on_success and success)
            b.next_obs[j] = obs
            b.raw_reward[j] = reward
            b.reward[j] = reward if self.scales is None else self._scale(j, int(b.task_id[j]), float(reward))
            b.terminated[j], b.truncated[j], b.success[j] = bool(terminated), truncated, success
            if terminated or truncated:
                obs, info = env.reset()
                b.task_id[j] = info.get("task_id", b.task_id[j])
            b.obs[j] = obs

    def _scale(self, j: int, task: int, reward: float) -> float:
        scales = self.scales[j]  # type: ignore[index]
        if task not in scales:
            scales[task] = RewardScale()
        return scales[task](reward)

    def call(self, name: str, *args: Any) -> list[Any]:
        """Call method `name` (found through the wrappers) of every env with `args`; attributes are returned."""
        results = []
        for env in self.envs:
            attr = env.get_wrapper_attr(name)
            results.append(attr(*args) if callable(attr) else attr)
        return results

    def set_end_on_success(self, on: bool) -> None:
        """End (truncate) episodes at their first successful step (evaluation), or not (training)."""
        self.end_on_success = bool(on)

    def normalizer_state(self) -> list[dict[int, dict[str, float]] | None]:
        """Per env: {task id: reward statistic}, or None when normalisation is off."""
        if self.scales is None:
            return [None] * len(self.envs)
        return [{task: scale.state_dict() for task, scale in scales.items()} for scales in self.scales]

    def load_normalizer_state(self, states: Sequence[dict[int, dict[str, float]]]) -> None:
        """Restore what `normalizer_state` returned (normalisation must be on)."""
        if self.scales is None:
            raise ValueError("reward normalisation is off in this env; there is no statistic to restore")
        self.scales = [{int(task): RewardScale.from_state(s) for task, s in state.items()} for state in states]

    def close(self) -> None:
        for env in self.envs:
            env.close()


class Backend:
    """What `MultiTaskVectorEnv` drives: `buffers` over all envs, a split step, and group methods by name."""

    buffers: StepBuffers
    single_observation_space: gym.Space
    single_action_space: gym.Space

    def step_async(self) -> None:
        """Start stepping the active envs with `buffers.actions`."""
        raise NotImplementedError

    def step_wait(self) -> None:
        """Wait until the step started by `step_async` has written its results into `buffers`."""
        raise NotImplementedError

    def run(self, method: str, *args: Any, per_env: Sequence[Any] | None = None) -> list[Any] | None:
        """Run `EnvGroup.<method>(*args)` on every group (with its slice of `per_env`, one item per env, first)
        and return the per-env results in env order (None for methods that return nothing)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def step(self, actions: np.ndarray) -> None:
        """Step every env with `actions` (results in `buffers`)."""
        self.buffers.actions[:] = actions
        self.buffers.active[:] = True
        self.step_async()
        self.step_wait()

    def call(self, name: str, *args: Any) -> list[Any]:
        """Per env: `env.<name>(*args)`, or the attribute when it is not callable (gymnasium's `VectorEnv.call`)."""
        return self.run("call", name, *args)  # type: ignore[return-value]


class InProcessEnvs(Backend):
    """Sync vectorisation: one `EnvGroup` of all envs in this process; `envs` are the task envs themselves."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], task_ids: Sequence[int], normalize: bool):
        self.envs = [fn() for fn in env_fns]
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        layout = BufferLayout.for_env(self.envs[0], len(self.envs))
        self.buffers = layout.view(bytearray(layout.nbytes))
        self.buffers.task_id[:] = task_ids
        self.group = EnvGroup(self.envs, self.buffers, normalize)

    def step_async(self) -> None:
        """Nothing to start here: the step runs in `step_wait`."""

    def step_wait(self) -> None:
        self.group.step()

    def run(self, method: str, *args: Any, per_env: Sequence[Any] | None = None) -> list[Any] | None:
        head = () if per_env is None else (list(per_env),)
        return getattr(self.group, method)(*head, *args)

    def close(self) -> None:
        self.group.close()
