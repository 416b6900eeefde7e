"""Uniform weighting: the plain mean of the task losses (the MT-SAC baseline)."""

from __future__ import annotations

import torch
from torch import Tensor

from mtrl.balancers.base import LossBalancer


class Uniform(LossBalancer):
    """Coefficients 1/K on every task loss, so the direction is the mean gradient (K = 1: exactly g)."""

    name = "uniform"

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)

    def weights(self, losses: Tensor) -> Tensor:
        """1/K for every task, in the dtype and device of ``losses``."""
        self._check_losses(losses)
        return torch.full_like(losses, 1.0 / self.num_tasks).detach()
