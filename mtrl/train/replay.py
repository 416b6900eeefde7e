"""Multi-task replay: one preallocated ring buffer per task, sampled as a batch laid out task by task.

The ring bookkeeping (write positions, sizes) lives on the host; the transitions live in a storage:
`HostStorage` (numpy arrays, indices from a numpy Generator: the CPU runs' stream, unchanged) or, for a
CUDA replay, `DeviceStorage` (tensors on the device, indices drawn there with a torch Generator, so a
sampled batch never crosses the host-device link). `replay_device` resolves `replay_device=auto`.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from mtrl.batch import Batch, Counts, task_counts
from mtrl.errors import UserError

#: Device memory left free beside a device replay, for the networks' activations and optimiser work.
HEADROOM_BYTES = 1 << 30


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


def field_widths(obs_dim: int, act_dim: int) -> dict[str, tuple[int, ...]]:
    """Per-transition shape of each stored field."""
    return {"obs": (obs_dim,), "action": (act_dim,), "reward": (), "next_obs": (obs_dim,), "terminated": ()}


def replay_bytes(num_tasks: int, capacity_per_task: int, obs_dim: int, act_dim: int) -> int:
    """Bytes of float32 storage a replay of this size allocates."""
    per_row = sum(int(np.prod(shape)) for shape in field_widths(obs_dim, act_dim).values())
    return 4 * num_tasks * capacity_per_task * per_row


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def free_device_bytes(device: torch.device) -> int:
    """Free memory on a CUDA device (as the driver reports it)."""
    return int(torch.cuda.mem_get_info(device)[0])


def fits(bytes_needed: int, device: torch.device) -> bool:
    """Whether `bytes_needed` fit on `device` with HEADROOM_BYTES to spare."""
    return bytes_needed + HEADROOM_BYTES <= free_device_bytes(device)


def replay_device(config: Any, agent_device: torch.device, bytes_needed: int) -> torch.device:
    """Where the replay lives: `config.replay_device` (auto, cpu, cuda, cuda:<n>).

    auto: the agent's device when it is CUDA and the replay fits there (with HEADROOM_BYTES to spare),
    else the CPU (with a warning naming the sizes when a CUDA agent's replay does not fit).
    """
    choice = str(config.replay_device)
    if choice != "auto":
        from mtrl.runtime import pick_device

        return pick_device(choice, "replay_device")
    if agent_device.type != "cuda":
        return torch.device("cpu")
    if fits(bytes_needed, agent_device):
        return agent_device
    warnings.warn(
        f"replay_device=auto: the replay needs {_gib(bytes_needed)} but {agent_device} has "
        f"{_gib(free_device_bytes(agent_device))} free; keeping it on the CPU",
        stacklevel=2,
    )
    return torch.device("cpu")


class HostStorage:
    """Transitions in numpy arrays of shape (K, capacity, ...); indices drawn with a numpy Generator."""

    def __init__(self, num_tasks: int, capacity: int, widths: dict[str, tuple[int, ...]], seed: int):
        self.arrays = {name: np.zeros((num_tasks, capacity, *shape), np.float32) for name, shape in widths.items()}
        self.rng = np.random.default_rng(seed)

    def write(self, task_ids: np.ndarray, slots: np.ndarray, values: dict[str, np.ndarray], sizes: np.ndarray) -> None:
        """Store row i of each field at (task_ids[i], slots[i]) (`sizes`: the rings' sizes after the write)."""
        for name, array in self.arrays.items():
            array[task_ids, slots] = values[name]

    def sample(self, counts: Counts, sizes: np.ndarray) -> Batch:
        """`counts[k]` uniform draws (with replacement) from the first `sizes[k]` rows of task k."""
        tasks = np.repeat(np.arange(len(counts)), counts)
        index = (
            np.concatenate([self.rng.integers(0, sizes[k], n) for k, n in enumerate(counts)])
            if len(tasks)
            else np.zeros(0, np.int64)
        )
        data = {name: torch.from_numpy(array[tasks, index]) for name, array in self.arrays.items()}
        return Batch(**data, task_ids=torch.from_numpy(tasks), counts=counts)

    def export(self, filled: int) -> dict[str, np.ndarray]:
        """The first `filled` rows of every ring, as (K, filled, ...) arrays (the checkpoint format)."""
        return {name: array[:, :filled].copy() for name, array in self.arrays.items()}

    def restore(self, stored: dict[str, np.ndarray], sizes: np.ndarray) -> None:
        """Put back what `export` returned."""
        for name, values in stored.items():
            self.arrays[name][:, : values.shape[1]] = values

    def rng_state(self) -> dict[str, Any]:
        """The sampling stream's state, under a key of its own kind."""
        return {"rng": self.rng.bit_generator.state}

    def load_rng_state(self, state: dict[str, Any]) -> None:
        """Resume the stream when `state` holds one of this kind (else it continues from the seed)."""
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]


class DeviceStorage:
    """Transitions in tensors of shape (K * capacity, ...) on a device; indices drawn there.

    Writes go through pinned host memory (asynchronous copies: PyTorch's pinned-memory cache keeps a
    block until its copy has run); sampling is device-only: uniform indices from a torch Generator on
    the device, scaled by the per-task sizes (a device copy updated with each write).
    """

    def __init__(
        self, num_tasks: int, capacity: int, widths: dict[str, tuple[int, ...]], seed: int, device: torch.device
    ):
        self.capacity, self.device = capacity, device
        self.tensors = {
            name: torch.zeros((num_tasks * capacity, *shape), device=device) for name, shape in widths.items()
        }
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.sizes = torch.zeros(num_tasks, dtype=torch.long, device=device)
        self._rows: tuple[Counts, Tensor] | None = None  # the last counts and their per-row task ids

    def _upload(self, array: np.ndarray) -> Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def write(self, task_ids: np.ndarray, slots: np.ndarray, values: dict[str, np.ndarray], sizes: np.ndarray) -> None:
        """Store row i of each field at (task_ids[i], slots[i]): two asynchronous uploads and one scatter per field."""
        flat = task_ids * self.capacity + slots
        # A slot written twice in one call (more rows of a task than its capacity): the last row wins.
        flat, keep = np.unique(flat[::-1], return_index=True)
        keep = len(task_ids) - 1 - keep
        widths = {name: int(np.prod(t.shape[1:])) for name, t in self.tensors.items()}
        packed = np.concatenate(
            [np.asarray(values[name], np.float32)[keep].reshape(len(keep), -1) for name in self.tensors], axis=1
        )
        rows = self._upload(packed)
        index_and_sizes = self._upload(np.concatenate([flat, sizes]).astype(np.int64))
        index, self.sizes = index_and_sizes[: len(flat)], index_and_sizes[len(flat) :]
        for tensor, column in zip(self.tensors.values(), rows.split(list(widths.values()), dim=1)):
            tensor.index_copy_(0, index, column.reshape(-1, *tensor.shape[1:]))

    def task_rows(self, counts: Counts) -> Tensor:
        """Per-row task ids for `counts`, kept on the device (cached: counts rarely change)."""
        if self._rows is None or self._rows[0] != counts:
            self._rows = (counts, self._upload(np.repeat(np.arange(len(counts), dtype=np.int64), counts)))
        return self._rows[1]

    def sample(self, counts: Counts, sizes: np.ndarray) -> Batch:
        """`counts[k]` uniform draws (with replacement) from task k's filled rows, all on the device."""
        tasks = self.task_rows(counts)
        uniform = torch.rand(len(tasks), generator=self.generator, device=self.device, dtype=torch.float64)
        index = (uniform * self.sizes[tasks]).long() + tasks * self.capacity
        data = {name: tensor.index_select(0, index) for name, tensor in self.tensors.items()}
        return Batch(**data, task_ids=tasks, counts=counts)

    def export(self, filled: int) -> dict[str, np.ndarray]:
        """The first `filled` rows of every ring, as (K, filled, ...) host arrays (the checkpoint format)."""
        k = self.sizes.shape[0]
        return {
            name: tensor.view(k, self.capacity, *tensor.shape[1:])[:, :filled].cpu().numpy()
            for name, tensor in self.tensors.items()
        }

    def restore(self, stored: dict[str, np.ndarray], sizes: np.ndarray) -> None:
        """Put back what `export` returned, and the rings' sizes."""
        k = sizes.shape[0]
        for name, values in stored.items():
            tensor = self.tensors[name].view(k, self.capacity, *self.tensors[name].shape[1:])
            tensor[:, : values.shape[1]] = torch.from_numpy(np.asarray(values)).to(self.device)
        self.sizes = torch.from_numpy(np.asarray(sizes, np.int64)).to(self.device)

    def rng_state(self) -> dict[str, Any]:
        """The sampling stream's state, under a key of its own kind."""
        return {"device_rng": self.generator.get_state()}

    def load_rng_state(self, state: dict[str, Any]) -> None:
        """Resume the stream when `state` holds one of this kind (else it continues from the seed)."""
        if "device_rng" in state:
            self.generator.set_state(state["device_rng"])


class MultiTaskReplay:
    """Per-task ring buffers of (obs, action, reward, next_obs, terminated), on the host or a device.

    `device`: cpu (numpy storage) or a CUDA device (tensor storage; a UserError names the bytes needed
    and free when it does not fit). Checkpoints hold the same arrays either way, so a run can resume
    with its replay elsewhere; the sampling stream then restarts from the seed (numpy and device streams differ).
    """

    def __init__(
        self,
        num_tasks: int,
        capacity_per_task: int,
        obs_dim: int,
        act_dim: int,
        seed: int,
        device: torch.device | str = "cpu",
    ):
        if capacity_per_task < 1:
            raise UserError(f"replay capacity per task is {capacity_per_task}; it must be at least 1")
        self.num_tasks = num_tasks
        self.capacity = capacity_per_task
        self.device = torch.device(device)
        self.position = np.zeros(num_tasks, np.int64)
        self.sizes = np.zeros(num_tasks, np.int64)
        widths = field_widths(obs_dim, act_dim)
        if self.device.type == "cpu":
            self.storage: HostStorage | DeviceStorage = HostStorage(num_tasks, capacity_per_task, widths, seed)
            return
        needed = replay_bytes(num_tasks, capacity_per_task, obs_dim, act_dim)
        if self.device.type == "cuda" and not fits(needed, self.device):
            raise UserError(
                f"replay_device={self.device}: the replay needs {_gib(needed)} (+{_gib(HEADROOM_BYTES)} "
                f"headroom) but {self.device} has {_gib(free_device_bytes(self.device))} free; lower "
                f"replay_capacity or set replay_device=cpu"
            )
        self.storage = DeviceStorage(num_tasks, capacity_per_task, widths, seed, self.device)

    def _claim_slots(self, task_ids: np.ndarray) -> np.ndarray:
        """The ring slot of each row, advancing positions and sizes (rows of a repeated task in order)."""
        if len(np.unique(task_ids)) < len(task_ids):
            return np.concatenate([self._claim_slots(task_ids[i : i + 1]) for i in range(len(task_ids))])
        slots = self.position[task_ids].copy()
        self.position[task_ids] = (slots + 1) % self.capacity
        self.sizes[task_ids] = np.minimum(self.sizes[task_ids] + 1, self.capacity)
        return slots

    def add(
        self,
        task_ids: np.ndarray,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
    ) -> None:
        """Store one transition per row; row i goes to task `task_ids[i]` (ids may repeat)."""
        task_ids = np.asarray(task_ids, np.int64)
        slots = self._claim_slots(task_ids)
        values = {"obs": obs, "action": action, "reward": reward, "next_obs": next_obs, "terminated": terminated}
        self.storage.write(task_ids, slots, values, self.sizes)

    def sample(self, counts: Sequence[int] | np.ndarray) -> Batch:
        """Sample `counts[k]` transitions (with replacement) from task k's buffer, chunked by task."""
        counts = task_counts(counts)
        empty = [k for k in range(self.num_tasks) if counts[k] > 0 and self.sizes[k] == 0]
        if empty:
            raise RuntimeError(f"cannot sample tasks {empty}: their replay buffers are empty")
        return self.storage.sample(counts, self.sizes)

    def state_dict(self) -> dict:
        """Everything needed to restore the buffer exactly (only the filled part of each ring)."""
        return {
            "storage": self.storage.export(int(self.sizes.max())),
            "position": self.position.copy(),
            "sizes": self.sizes.copy(),
            **self.storage.rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        filled = state["storage"]["obs"].shape[1]
        if state["sizes"].shape[0] != self.num_tasks or filled > self.capacity:
            raise UserError(
                f"saved replay holds {state['sizes'].shape[0]} tasks x {filled} transitions; "
                f"this run has {self.num_tasks} tasks x capacity {self.capacity}"
            )
        self.position[:] = state["position"]
        self.sizes[:] = state["sizes"]
        self.storage.restore(state["storage"], self.sizes)
        self.storage.load_rng_state(state)
