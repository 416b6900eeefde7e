"""A training batch laid out task by task, and the helpers that evaluate it one task chunk at a time.

Agents and the balanced objective both use these: a batch's rows are contiguous per task
(`Batch.counts[k]` rows of task k), so it can be viewed as (K, n, ...) chunks, and functions
evaluated chunk by chunk under vmap see one task per chunk (per-task layers become batched matmuls).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import torch
from torch import Tensor


@dataclass
class Batch:
    """Transitions grouped in contiguous task chunks; `counts[k]` rows belong to task k."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor  # 1.0 where the next state is terminal (no bootstrap); truncation is 0
    task_ids: torch.Tensor
    counts: torch.Tensor  # (K,) rows per task

    def to(self, device: torch.device | str) -> "Batch":
        """The transitions on `device`; `counts` stays on the CPU (it sets shapes: no device syncs)."""
        return Batch(**{f.name: getattr(self, f.name) if f.name == "counts" else getattr(self, f.name).to(device)
                        for f in fields(self)})

    def __len__(self) -> int:
        return int(self.task_ids.shape[0])


def task_mean(values: Tensor, task_ids: Tensor, num_tasks: int) -> Tensor:
    """Average per-sample values within each task: (B,) -> (K,); tasks absent from the batch get 0."""
    sums = values.new_zeros(num_tasks).index_add(0, task_ids, values)
    counts = values.new_zeros(num_tasks).index_add(0, task_ids, torch.ones_like(values))
    return sums / counts.clamp(min=1.0)


def chunk_by_task(tensors: dict[str, Tensor], counts: Tensor) -> dict[str, Tensor]:
    """Re-lay a task-contiguous batch as (K, n_max, ...) chunks plus a (K, n_max) mask of real rows.

    `task_ids` becomes one id per chunk, (K,), which the networks treat as "the whole chunk is this task".
    """
    counts = counts.to(torch.long)
    k, n_max = counts.numel(), int(counts.max())
    device = next(iter(tensors.values())).device
    if bool((counts == n_max).all()):  # equal shares (the usual case): the chunks are views, no copy
        chunks = {name: t.reshape(k, n_max, *t.shape[1:]) for name, t in tensors.items() if name != "task_ids"}
        mask = torch.ones(k, n_max, dtype=torch.bool, device=device)
    else:
        offsets = torch.cumsum(counts, 0) - counts
        cols = torch.arange(n_max, device=device)
        counts_d = counts.to(device)
        mask = cols.unsqueeze(0) < counts_d.unsqueeze(1)
        rows = torch.minimum(cols.unsqueeze(0), (counts_d - 1).clamp(min=0).unsqueeze(1))
        # Padding rows repeat a real row (masked out); a task with no rows points at row 0 or the last one.
        index = (offsets.to(device).unsqueeze(1) + rows).clamp(max=int(counts.sum()) - 1)
        chunks = {name: t[index] for name, t in tensors.items() if name != "task_ids"}
    if "task_ids" in tensors:  # one id per chunk: under vmap each chunk sees a 0-dim id (networks' fast path)
        chunks["task_ids"] = torch.arange(k, device=device)
    chunks["mask"] = mask.to(next(iter(tensors.values())).dtype)
    return chunks


def map_task_chunks(fn: Callable[..., Tensor], tensors: dict[str, Tensor], counts: Tensor) -> Tensor:
    """Row-wise ``fn(**tensors) -> (B, ...)`` evaluated one task chunk at a time under vmap, back in row order.

    Same values as calling ``fn`` on the whole task-contiguous batch, but per-task layers see one task
    per chunk (a batched matmul with each task's matrix instead of a mixed-task layer).
    """
    chunks = chunk_by_task(tensors, counts)
    mask = chunks.pop("mask").bool()
    out = torch.func.vmap(lambda chunk: fn(**chunk))(chunks)
    if bool((counts == counts.max()).all()):  # no padding rows
        return out.reshape(-1, *out.shape[2:])
    return out[mask]
