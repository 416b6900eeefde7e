"""Multi-task replay: one preallocated ring buffer per task, sampled as a batch laid out task by task."""

from __future__ import annotations

import numpy as np
import torch

from mtrl.batch import Batch
from mtrl.errors import UserError


def allocate(total: int, shares: np.ndarray) -> np.ndarray:
    """Split `total` rows over tasks in proportion to `shares` (largest remainder: sums exactly to total)."""
    shares = np.asarray(shares, dtype=np.float64)
    if shares.ndim != 1 or (shares < 0).any() or not np.isfinite(shares).all() or shares.sum() <= 0:
        raise UserError(f"task shares {shares.tolist()} are invalid; give non-negative numbers with a positive sum")
    exact = total * shares / shares.sum()
    counts = np.floor(exact).astype(np.int64)
    remainder = total - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:remainder]] += 1
    return counts


class MultiTaskReplay:
    """Per-task ring buffers of (obs, action, reward, next_obs, terminated)."""

    _FIELDS = ("obs", "action", "reward", "next_obs", "terminated")

    def __init__(self, num_tasks: int, capacity_per_task: int, obs_dim: int, act_dim: int, seed: int):
        if capacity_per_task < 1:
            raise UserError(f"replay capacity per task is {capacity_per_task}; it must be at least 1")
        self.num_tasks = num_tasks
        self.capacity = capacity_per_task
        shape = (num_tasks, capacity_per_task)
        self.storage = {
            "obs": np.zeros((*shape, obs_dim), np.float32),
            "action": np.zeros((*shape, act_dim), np.float32),
            "reward": np.zeros(shape, np.float32),
            "next_obs": np.zeros((*shape, obs_dim), np.float32),
            "terminated": np.zeros(shape, np.float32),
        }
        self.position = np.zeros(num_tasks, np.int64)
        self.sizes = np.zeros(num_tasks, np.int64)
        self.rng = np.random.default_rng(seed)

    def add(self, task_ids: np.ndarray, obs: np.ndarray, action: np.ndarray, reward: np.ndarray,
            next_obs: np.ndarray, terminated: np.ndarray) -> None:
        """Store one transition per row; row i goes to task `task_ids[i]` (ids may repeat)."""
        task_ids = np.asarray(task_ids)
        if len(np.unique(task_ids)) < len(task_ids):  # repeated tasks (env slots): one row at a time
            for row in range(len(task_ids)):
                self.add(task_ids[row:row + 1], obs[row:row + 1], action[row:row + 1], reward[row:row + 1],
                         next_obs[row:row + 1], terminated[row:row + 1])
            return
        slots = self.position[task_ids]
        for name, values in (("obs", obs), ("action", action), ("reward", reward), ("next_obs", next_obs),
                             ("terminated", terminated)):
            self.storage[name][task_ids, slots] = values
        self.position[task_ids] = (slots + 1) % self.capacity
        self.sizes[task_ids] = np.minimum(self.sizes[task_ids] + 1, self.capacity)

    def sample(self, counts: np.ndarray) -> Batch:
        """Sample `counts[k]` transitions (with replacement) from task k's buffer, chunked by task."""
        counts = np.asarray(counts, dtype=np.int64)
        empty = [k for k in range(self.num_tasks) if counts[k] > 0 and self.sizes[k] == 0]
        if empty:
            raise RuntimeError(f"cannot sample tasks {empty}: their replay buffers are empty")
        tasks = np.repeat(np.arange(self.num_tasks), counts)
        index = np.concatenate(
            [self.rng.integers(0, self.sizes[k], counts[k]) for k in range(self.num_tasks)]
        ) if len(tasks) else np.zeros(0, np.int64)
        data = {name: torch.from_numpy(self.storage[name][tasks, index]) for name in self._FIELDS}
        return Batch(**data, task_ids=torch.from_numpy(tasks), counts=torch.from_numpy(counts))

    def state_dict(self) -> dict:
        """Everything needed to restore the buffer exactly (only the filled part of each ring)."""
        filled = int(self.sizes.max())
        return {
            "storage": {k: v[:, :filled].copy() for k, v in self.storage.items()},
            "position": self.position.copy(),
            "sizes": self.sizes.copy(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        filled = state["storage"]["obs"].shape[1]
        if state["sizes"].shape[0] != self.num_tasks or filled > self.capacity:
            raise UserError(
                f"saved replay holds {state['sizes'].shape[0]} tasks x {filled} transitions; "
                f"this run has {self.num_tasks} tasks x capacity {self.capacity}"
            )
        for k, v in state["storage"].items():
            self.storage[k][:, :filled] = v
        self.position[:] = state["position"]
        self.sizes[:] = state["sizes"]
        self.rng.bit_generator.state = state["rng"]
