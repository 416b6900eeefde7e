"""Lookahead inter-task affinity (Fifty et al., NeurIPS 2021, "Efficiently Identifying Task Groupings for
Multi-Task Learning", TAG) and its running average over training, saved in the run directory.

Z[i, j] = 1 - L_j(theta - lr g_i) / L_j(theta): how much one SGD step on task i's loss, applied to the
shared parameters only, lowers task j's loss on the same batch (positive = i helps j). Task-specific
parameters stay at theta, as TAG's lookahead moves only the shared encoder. The authors' code
(google-research tag/taskonomy/tag.patch; read, not copied) also divides by lr and replays their SGD
optimiser's momentum and weight decay; here the paper's plain SGD step is used and lr is the caller's.
The ratio is written (L_j - L_j') / |L_j|: the paper's value for positive losses, and for negative losses
(SAC's actor loss) a positive Z still means "task i's step lowered task j's loss". A zero loss gives a
non-finite entry, which the accumulator leaves out of that entry's average.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from mtrl.balancers.objective import BalancedObjective, SampleLoss
from mtrl.errors import UserError

#: File name of the accumulated affinities inside a run directory.
AFFINITY_FILE = "affinity.npz"


def lookahead_affinity(
    objective: BalancedObjective,
    sample_loss: SampleLoss,
    tensors: dict[str, Tensor],
    counts: Tensor,
    lr: float,
    *,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """(K, K) float64 CPU lookahead affinities Z[i, j] of ``objective``'s network on one batch.

    One vmap(grad) pass gives the per-task gradients g_i (``objective.per_task_gradients``); the K
    lookahead parameter sets theta - lr g_i (shared parameters only) are then evaluated in one
    vmap over the sets of ``objective.task_losses`` on the same task-chunked batch. ``chunk_size``
    bounds that vmap's memory (sets evaluated at once). The module's parameters are not changed.
    """
    G, (losses, _) = objective.per_task_gradients(sample_loss, tensors, counts)
    k = G.shape[0]
    stacked: dict[str, Tensor] = {}
    in_dims: dict[str, Optional[int]] = {}
    offset = 0
    for name, p in objective.parameters().items():
        size = p.numel()
        if offset < objective.num_shared:  # shared parameters come first, in G's column order
            stacked[name] = p.detach() - lr * G[:, offset : offset + size].reshape(k, *p.shape)
            in_dims[name] = 0
        else:
            stacked[name] = p.detach()
            in_dims[name] = None
        offset += size

    def after(params: dict[str, Tensor]) -> Tensor:
        return objective.task_losses(sample_loss, tensors, counts, params=params)[0]

    with torch.no_grad():
        looked = torch.func.vmap(after, in_dims=(in_dims,), chunk_size=chunk_size)(stacked)  # row i: step on task i
    before = losses.detach().to(torch.float64).cpu()
    looked = looked.to(torch.float64).cpu()
    return (before[None, :] - looked) / before.abs()[None, :]


class AffinityAccumulator:
    """Running sums of affinity matrices per network ("critic", "actor", ...), with a mean and a file.

    Entries that are not finite are left out of that entry's sum and count. ``save(run_dir)`` writes
    ``<run_dir>/affinity.npz`` atomically (a temporary file, then ``os.replace``); ``load(run_dir)``
    reads it back. ``state_dict``/``load_state_dict`` carry the same arrays for a training checkpoint.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        self.tasks = [str(t) for t in tasks]
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] = {}

    @property
    def networks(self) -> list[str]:
        """Names of the networks with at least one measurement, sorted."""
        return sorted(self.sums)

    def add(self, network: str, affinity: Union[Tensor, np.ndarray]) -> None:
        """Add one (K, K) affinity matrix of ``network``."""
        z = affinity.detach().cpu().numpy() if isinstance(affinity, Tensor) else np.asarray(affinity)
        k = len(self.tasks)
        if z.shape != (k, k):
            raise ValueError(f"affinity of {network}: expected shape ({k}, {k}), got {z.shape}")
        finite = np.isfinite(z)
        self.sums.setdefault(network, np.zeros((k, k)))
        self.counts.setdefault(network, np.zeros((k, k), dtype=np.int64))
        self.sums[network] += np.where(finite, z, 0.0)
        self.counts[network] += finite

    def mean(self, network: Optional[str] = None) -> np.ndarray:
        """(K, K) mean affinity of ``network``, or the mean of the networks' means (None); nan where unmeasured."""
        if not self.sums:
            raise UserError("no affinity has been measured yet")
        if network is not None and network not in self.sums:
            raise UserError(f"network={network} is not allowed; expected one of: {', '.join(self.networks)}")
        names = self.networks if network is None else [network]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = [np.where(self.counts[n] > 0, self.sums[n] / self.counts[n], np.nan) for n in names]
        return np.mean(means, axis=0)

    def state_dict(self) -> dict[str, Any]:
        """The tasks and per-network sums and counts as numpy arrays (keys ``<network>.sum``/``.count``)."""
        state: dict[str, Any] = {"tasks": np.array(self.tasks)}
        for name in self.networks:
            state[f"{name}.sum"], state[f"{name}.count"] = self.sums[name], self.counts[name]
        return state

    def load_state_dict(self, state: Any) -> None:
        """Restore what :meth:`state_dict` returned (tasks must match)."""
        tasks = [str(t) for t in state["tasks"]]
        if tasks != self.tasks:
            raise UserError(f"affinity state is for tasks {tasks}, this run has {self.tasks}")
        names = {key.rsplit(".", 1)[0] for key in state if key != "tasks"}
        self.sums = {n: np.array(state[f"{n}.sum"], dtype=np.float64) for n in names}
        self.counts = {n: np.array(state[f"{n}.count"], dtype=np.int64) for n in names}

    def save(self, run_dir: Union[str, Path]) -> Path:
        """Write ``<run_dir>/affinity.npz`` atomically; returns its path."""
        path = Path(run_dir) / AFFINITY_FILE
        tmp = path.with_name(f".{AFFINITY_FILE}.tmp")
        with open(tmp, "wb") as handle:  # a file object: np.savez would otherwise append ".npz" to the name
            np.savez(handle, **self.state_dict())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, run_dir: Union[str, Path]) -> "AffinityAccumulator":
        """The accumulator saved in ``run_dir``; a missing or unreadable file is a UserError."""
        path = Path(run_dir) / AFFINITY_FILE
        if not path.is_file():
            raise UserError(f"{path} does not exist; train with diagnostics.affinity_every > 0 to measure affinities")
        try:
            with np.load(path) as data:
                state = {key: data[key] for key in data.files}
            acc = cls(state["tasks"])
            acc.load_state_dict(state)
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"cannot read {path} ({type(err).__name__}); is it an affinity file?") from None
        return acc
