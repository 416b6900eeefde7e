"""Uniform weighting: the plain mean of the task losses (the MT-SAC baseline)."""

from __future__ import annotations

import torch
from torch import Tensor

from mtrl.balancers.base import LossBalancer


class Uniform(LossBalancer):
    """Coefficients 1/K on every task loss, so the direction is the mean gradient (K = 1: exactly g).

    Static: the weights are constants made on the losses' device, never read back to the host, so an
    update with this balancer has no host-device synchronisation and compiles as one graph.
    """

    name = "uniform"
    static = True

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)

    def weights(self, losses: Tensor) -> Tensor:
        """1/K for every task, in the dtype and device of ``losses``."""
        self._check_loss_shape(losses)
        return torch.full_like(losses, 1.0 / self.num_tasks).detach()
