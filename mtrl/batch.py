"""A training batch laid out task by task, and the helpers that evaluate it one task chunk at a time.

Agents and the balanced objective both use these: a batch's rows are contiguous per task
(`Batch.counts[k]` rows of task k), so it can be viewed as (K, n, ...) chunks, and functions
evaluated chunk by chunk under vmap see one task per chunk (per-task layers become batched matmuls).
`counts` is a tuple of Python ints: it fixes every shape on the host, so no helper here reads a
device tensor back (no host-device synchronisation) and a compiled update specialises on it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Sequence, Union

import numpy as np
import torch
from torch import Tensor

Counts = tuple[int, ...]  # rows per task, in task order


def task_counts(counts: Union[Sequence[int], np.ndarray, Tensor]) -> Counts:
    """Rows per task as a tuple of Python ints (from a tuple, list, numpy array or CPU tensor)."""
    values = counts.tolist() if isinstance(counts, (Tensor, np.ndarray)) else counts
    return tuple(int(c) for c in values)


def equal_count(counts: Counts) -> int | None:
    """n when every task has the same number n > 0 of rows (the usual layout), else None."""
    return counts[0] if counts and counts[0] > 0 and all(c == counts[0] for c in counts) else None


@dataclass
class Batch:
    """Transitions grouped in contiguous task chunks; `counts[k]` rows belong to task k."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor  # 1.0 where the next state is terminal (no bootstrap); truncation is 0
    task_ids: torch.Tensor
    counts: Counts  # rows per task (a tensor or array given here becomes a tuple of ints)

    def __post_init__(self) -> None:
        self.counts = task_counts(self.counts)

    def to(self, device: torch.device | str) -> "Batch":
        """The transitions on `device` (no copy for those already there)."""
        return Batch(
            **{
                f.name: getattr(self, f.name) if f.name == "counts" else getattr(self, f.name).to(device)
                for f in fields(self)
            }
        )

    def __len__(self) -> int:
        return int(self.task_ids.shape[0])


def task_mean(values: Tensor, task_ids: Tensor, num_tasks: int) -> Tensor:
    """Average per-sample values within each task: (B,) -> (K,); tasks absent from the batch get 0."""
    sums = values.new_zeros(num_tasks).index_add(0, task_ids, values)
    counts = values.new_zeros(num_tasks).index_add(0, task_ids, torch.ones_like(values))
    return sums / counts.clamp(min=1.0)


def chunk_by_task(tensors: dict[str, Tensor], counts: Sequence[int]) -> dict[str, Tensor]:
    """Re-lay a task-contiguous batch as (K, n_max, ...) chunks plus a (K, n_max) mask of real rows.

    `task_ids` becomes one id per chunk, (K,), which the networks treat as "the whole chunk is this task".
    Equal counts (the usual case) give views and no host-device transfer; unequal ones (a curriculum)
    gather rows with an index built on the host.
    """
    counts = task_counts(counts)
    k, n_max = len(counts), max(counts)
    first = next(iter(tensors.values()))
    device = first.device
    if equal_count(counts) is not None:  # the chunks are views, no copy
        chunks = {name: t.reshape(k, n_max, *t.shape[1:]) for name, t in tensors.items() if name != "task_ids"}
        mask = torch.ones(k, n_max, dtype=first.dtype, device=device)
    else:
        index, real = _padded_rows(counts)
        index_d = torch.from_numpy(index).to(device)
        chunks = {name: t[index_d] for name, t in tensors.items() if name != "task_ids"}
        mask = torch.from_numpy(real).to(device=device, dtype=first.dtype)
    if "task_ids" in tensors:  # one id per chunk: under vmap each chunk sees a 0-dim id (networks' fast path)
        chunks["task_ids"] = torch.arange(k, device=device)
    chunks["mask"] = mask
    return chunks


def _padded_rows(counts: Counts) -> tuple[np.ndarray, np.ndarray]:
    """(K, n_max) row index into the task-contiguous batch and the mask of real rows.

    Padding rows repeat the task's last real row (masked out); a task with no rows points at row 0 or the last one.
    """
    c = np.asarray(counts, np.int64)
    offsets = np.cumsum(c) - c
    cols = np.arange(max(counts))
    real = cols[None, :] < c[:, None]
    rows = np.minimum(cols[None, :], np.maximum(c - 1, 0)[:, None])
    index = np.minimum(offsets[:, None] + rows, max(int(c.sum()) - 1, 0))
    return index, real.astype(np.float32)


def map_task_chunks(fn: Callable[..., Tensor], tensors: dict[str, Tensor], counts: Sequence[int]) -> Tensor:
    """Row-wise ``fn(**tensors) -> (B, ...)`` evaluated one task chunk at a time under vmap, back in row order.

    Same values as calling ``fn`` on the whole task-contiguous batch, but per-task layers see one task
    per chunk (a batched matmul with each task's matrix instead of a mixed-task layer).
    """
    counts = task_counts(counts)
    chunks = chunk_by_task(tensors, counts)
    chunks.pop("mask")
    out = torch.func.vmap(lambda chunk: fn(**chunk))(chunks)
    if equal_count(counts) is not None:  # no padding rows
        return out.reshape(-1, *out.shape[2:])
    real = np.flatnonzero(_padded_rows(counts)[1].reshape(-1))
    return out.reshape(-1, *out.shape[2:])[torch.from_numpy(real).to(out.device)]
