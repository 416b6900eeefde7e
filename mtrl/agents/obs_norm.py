"""Observation standardisation with a dataset's statistics, applied where observations enter an agent.

Offline agents see observations as (obs - mean) / std with the per-dimension mean and std of the training
dataset (all trained tasks' transitions pooled), as TD3+BC (Fujimoto & Gu 2021) and CORL normalise states.
Meta-World's raw coordinates span about 0.1-1: the centimetres that decide success (reach-v3 succeeds within
5 cm of its target, its hand sits about 4.5 cm above it) are tiny inputs until scaled by their spread.
Dimensions that are constant in the data (std < MIN_STD) are only shifted, so off-data values stay finite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from mtrl.errors import UserError

MIN_STD = 1e-6


@dataclass(frozen=True)
class ObsNormalizer:
    """Per-dimension shift and scale of observations: normalized = (obs - mean) / std."""

    mean: Tensor  # (obs_dim,)
    std: Tensor  # (obs_dim,), every entry > 0

    @classmethod
    def from_arrays(cls, observations: Sequence[np.ndarray], device: torch.device | str = "cpu") -> "ObsNormalizer":
        """Statistics of the pooled rows of `observations` (one (N_k, obs_dim) array per task)."""
        pooled = np.concatenate([np.asarray(o, dtype=np.float64) for o in observations])
        if pooled.ndim != 2 or len(pooled) == 0:
            raise UserError(f"observation statistics need a non-empty (N, obs_dim) array, got shape {pooled.shape}")
        std = pooled.std(axis=0)
        std[std < MIN_STD] = 1.0
        return cls(
            torch.as_tensor(pooled.mean(axis=0), dtype=torch.float32, device=device),
            torch.as_tensor(std, dtype=torch.float32, device=device),
        )

    def __call__(self, obs: Tensor) -> Tensor:
        return (obs - self.mean) / self.std

    def state_dict(self) -> dict[str, Tensor]:
        return {"mean": self.mean.cpu(), "std": self.std.cpu()}

    @classmethod
    def from_state(cls, state: dict[str, Any], obs_dim: int, device: torch.device | str) -> "ObsNormalizer":
        """Rebuild from `state_dict()`; a size that does not match the agent's observations is a one-line error."""
        mean, std = torch.as_tensor(state["mean"]), torch.as_tensor(state["std"])
        if mean.shape != (obs_dim,) or std.shape != (obs_dim,) or not bool((std > 0).all()):
            raise UserError(
                f"checkpoint observation statistics have shape {tuple(mean.shape)} (std > 0: "
                f"{bool((std > 0).all())}); this agent needs ({obs_dim},) with std > 0"
            )
        return cls(mean.float().to(device), std.float().to(device))
