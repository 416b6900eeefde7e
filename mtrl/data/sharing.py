"""Cross-task data sharing for offline multi-task RL: `none`, `all`, `cds` and `cds_zero` batches.

Every task i gets `own_count` transitions sampled uniformly from its own data and, unless the mode
is `none`, `shared_count` *candidate* transitions sampled uniformly from the other tasks' data
(pooled: a task with more data contributes more candidates). Then, per mode:

- ``none``: the batch of task i is its own transitions only.
- ``all``: every candidate joins task i's batch, with task i's reward (relabelled, see envs/relabel.py).
- ``cds`` (Yu et al., 2021, Conservative Data Sharing): a candidate (s, a) joins task i's batch only if
  Q_i(s, a) >= the k-th percentile of Q_i over task i's own transitions in the same batch, where Q_i
  is task i's conservative (CQL) Q-value; shared rows get task i's relabelled reward.
- ``cds_zero``: the CDS filter, but shared rows get reward 0 (no reward function needed).

Own transitions always keep their stored reward. Batches are laid out task by task (`Batch.counts`),
so the number of rows per task varies under CDS; the losses are per-task means either way. Everything
here is a pure function of the store, the random generator and the given Q function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from mtrl.batch import Batch
from mtrl.errors import UserError

MODES = ("none", "all", "cds", "cds_zero")
RELABELLING_MODES = ("all", "cds")  # modes whose shared rows need task i's reward
QFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (obs, action, task_ids) -> (n,)


def check_mode(mode: object) -> str:
    if mode not in MODES:
        raise UserError(f"sharing='{mode}' is not allowed; use none, all, cds or cds_zero")
    return str(mode)


@dataclass
class TransitionStore:
    """All tasks' transitions, concatenated task by task, with a (K, N) reward table.

    `rewards[i, g]` is transition g's reward for task i: the stored reward where g belongs to task i,
    the relabelled reward elsewhere (NaN where it was not computed).
    """

    obs: np.ndarray  # (N, obs_dim) float32
    action: np.ndarray  # (N, act_dim) float32
    next_obs: np.ndarray  # (N, obs_dim) float32
    terminated: np.ndarray  # (N,) float32
    source: np.ndarray  # (N,) int64: the task each transition was collected in
    offsets: np.ndarray  # (K + 1,) int64: task k's rows are offsets[k]:offsets[k + 1]
    rewards: np.ndarray  # (K, N) float32

    @property
    def num_tasks(self) -> int:
        return len(self.offsets) - 1

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @classmethod
    def from_arrays(
        cls,
        obs: Sequence[np.ndarray],
        action: Sequence[np.ndarray],
        reward: Sequence[np.ndarray],
        next_obs: Sequence[np.ndarray],
        terminated: Sequence[np.ndarray],
        relabelled: dict[tuple[int, int], np.ndarray] | None = None,
    ) -> "TransitionStore":
        """Build from per-task arrays; `relabelled[(i, j)]` = task i's rewards of task j's transitions."""
        sizes = np.array([len(r) for r in reward], np.int64)
        if (sizes == 0).any():
            raise UserError(f"every task needs at least one transition; sizes are {sizes.tolist()}")
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        k, n = len(sizes), int(offsets[-1])
        rewards = np.full((k, n), np.nan, np.float32)
        for i in range(k):
            rewards[i, offsets[i] : offsets[i + 1]] = reward[i]
        for (i, j), values in (relabelled or {}).items():
            if i != j:
                rewards[i, offsets[j] : offsets[j + 1]] = values
        return cls(
            obs=np.concatenate(obs).astype(np.float32),
            action=np.concatenate(action).astype(np.float32),
            next_obs=np.concatenate(next_obs).astype(np.float32),
            terminated=np.concatenate(terminated).astype(np.float32),
            source=np.repeat(np.arange(k), sizes),
            offsets=offsets,
            rewards=rewards,
        )

    def has_relabelled_rewards(self) -> bool:
        return bool(np.isfinite(self.rewards).all())


@dataclass
class SharingStats:
    """Per task: candidates offered, candidates shared, and the CDS Q threshold (NaN unless cds)."""

    candidates: np.ndarray  # (K,)
    shared: np.ndarray  # (K,)
    threshold: np.ndarray  # (K,)

    @property
    def fraction(self) -> np.ndarray:
        return np.where(self.candidates > 0, self.shared / np.maximum(self.candidates, 1), 0.0)


def sample_indices(
    rng: np.random.Generator, offsets: np.ndarray, own_count: int, shared_count: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per task: `own_count` uniform rows of its own data, `shared_count` uniform rows of all other tasks' data."""
    offsets = np.asarray(offsets, np.int64)
    total = int(offsets[-1])
    own, cand = [], []
    for i in range(len(offsets) - 1):
        start, stop = int(offsets[i]), int(offsets[i + 1])
        own.append(rng.integers(start, stop, own_count))
        others = total - (stop - start)
        if shared_count > 0 and others > 0:
            draw = rng.integers(0, others, shared_count)
            cand.append(np.where(draw >= start, draw + (stop - start), draw))  # skip task i's own block
        else:
            cand.append(np.zeros(0, np.int64))
    return own, cand


def cds_filter(q_own: torch.Tensor, q_candidates: torch.Tensor, percentile: float) -> tuple[torch.Tensor, float]:
    """CDS: keep the candidates whose Q is at least the `percentile`-th percentile of Q over own data.

    The percentile uses linear interpolation (numpy's default); returns (keep mask, threshold).
    """
    threshold = torch.quantile(q_own.detach().double().flatten(), percentile / 100.0)
    return q_candidates.detach().double() >= threshold, float(threshold)


def assemble(
    store: TransitionStore,
    mode: str,
    own: Sequence[np.ndarray],
    candidates: Sequence[np.ndarray],
    keep: Sequence[np.ndarray] | None = None,
) -> Batch:
    """The task-by-task batch: task i's own rows, then its kept candidates with task i's (or zero) reward."""
    k = store.num_tasks
    keep = [np.ones(len(c), bool) for c in candidates] if keep is None else keep
    rows, rewards, counts = [], [], np.zeros(k, np.int64)
    for i in range(k):
        shared = (
            np.asarray(candidates[i], np.int64)[np.asarray(keep[i], bool)] if mode != "none" else np.zeros(0, np.int64)
        )
        shared_reward = np.zeros(len(shared), np.float32) if mode == "cds_zero" else store.rewards[i, shared]
        if len(shared) and not np.isfinite(shared_reward).all():
            raise RuntimeError(f"task {i}: shared transitions have no relabelled reward (mode {mode})")
        rows.append(np.concatenate([own[i], shared]).astype(np.int64))
        rewards.append(np.concatenate([store.rewards[i, own[i]], shared_reward]))
        counts[i] = len(rows[-1])
    index = np.concatenate(rows)
    return Batch(
        obs=torch.from_numpy(store.obs[index]),
        action=torch.from_numpy(store.action[index]),
        reward=torch.from_numpy(np.concatenate(rewards).astype(np.float32)),
        next_obs=torch.from_numpy(store.next_obs[index]),
        terminated=torch.from_numpy(store.terminated[index]),
        task_ids=torch.from_numpy(np.repeat(np.arange(k), counts)),
        counts=torch.from_numpy(counts),
    )


@torch.no_grad()
def make_batch(
    store: TransitionStore,
    mode: str,
    rng: np.random.Generator,
    own_count: int,
    shared_count: int,
    q_fn: QFunction | None = None,
    percentile: float = 50.0,
    device: torch.device | str = "cpu",
) -> tuple[Batch, SharingStats]:
    """Sample one stratified batch under a sharing mode; `q_fn` (needed by cds/cds_zero) is task i's Q."""
    mode = check_mode(mode)
    k = store.num_tasks
    own, cand = sample_indices(rng, store.offsets, own_count, 0 if mode == "none" else shared_count)
    threshold = np.full(k, np.nan)
    keep = None
    if mode in ("cds", "cds_zero") and any(len(c) for c in cand):
        if q_fn is None:
            raise ValueError("cds sharing needs a Q function")
        index = np.concatenate(own + cand)
        task_ids = np.concatenate(
            [np.full(len(o), i) for i, o in enumerate(own)] + [np.full(len(c), i) for i, c in enumerate(cand)]
        )
        q = (
            q_fn(
                torch.from_numpy(store.obs[index]).to(device),
                torch.from_numpy(store.action[index]).to(device),
                torch.from_numpy(task_ids).to(device),
            )
            .flatten()
            .cpu()
        )
        own_sizes = [len(o) for o in own]
        q_own = torch.split(q[: sum(own_sizes)], own_sizes)
        q_cand = torch.split(q[sum(own_sizes) :], [len(c) for c in cand])
        keep = []
        for i in range(k):
            mask, threshold[i] = cds_filter(q_own[i], q_cand[i], percentile)
            keep.append(mask.numpy())
    batch = assemble(store, mode, own, cand, keep)
    shared = np.asarray(batch.counts) - own_count
    stats = SharingStats(candidates=np.array([len(c) for c in cand]), shared=shared, threshold=threshold)
    return batch, stats
