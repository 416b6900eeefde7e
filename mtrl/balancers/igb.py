"""IGB v1 (Dai et al., UAI 2023): weight log-losses by their remaining "improvable gap"."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from mtrl import checks
from mtrl.balancers.base import LossBalancer


class IGB(LossBalancer):
    """Heuristic IGB: the step loss is (1/K) sum_i w_i log l_i with w = K softmax(l / l_base) (sum K).

    l_base is the mean of the losses seen by the first ``base_step`` calls of ``weights`` (default 1:
    the first observed losses), then frozen; until it is frozen w = 1 (plain mean of log-losses), as
    the authors' code does before its base epoch. ``log_loss_weights`` returns w (sums to K);
    ``weights`` returns the coefficients on the raw task losses/gradients of the step loss,
    w_i / (K l_i) = softmax(l / l_base)_i / l_i, with l_i and l_base clamped to >= ``eps`` (IGB needs
    positive losses). The 1/K factor is the mean convention (the paper sums). K = 1 gives g / l: a
    positive multiple of the plain gradient.
    """

    name = "igb"
    positive_losses = "it weights log-losses"
    default_apply_to = ("critic",)

    def __init__(self, num_tasks: int, *, base_step: int = 1, eps: float = 1e-8) -> None:
        super().__init__(num_tasks)
        self.base_step = checks.integer("balancer.base_step", base_step, 1)
        self.eps = checks.number("balancer.eps", eps, 0.0, strict_low=True)
        self.loss_sum = torch.zeros(num_tasks, dtype=torch.float64)
        self.observed = 0

    @property
    def base_losses(self) -> Tensor | None:
        """The frozen base losses, or None while they are still being averaged."""
        return self.loss_sum / self.base_step if self.observed >= self.base_step else None

    def log_loss_weights(self, losses: Tensor) -> Tensor:
        """w = K softmax(l / l_base) in float64 (ones before the base is frozen); does not change state."""
        return self._log_loss_weights(self._check_losses(losses))

    def _log_loss_weights(self, l: Tensor) -> Tensor:
        base = self.base_losses
        if base is None:
            return torch.ones(self.num_tasks, dtype=torch.float64)
        return self.num_tasks * torch.softmax(l / base.clamp_min(self.eps), dim=0)

    def weights(self, losses: Tensor) -> Tensor:
        l = self._check_losses(losses)
        coef = self._log_loss_weights(l) / (self.num_tasks * l.clamp_min(self.eps))
        if self.observed < self.base_step:
            self.loss_sum += l
            self.observed += 1
        return coef.to(device=losses.device, dtype=losses.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum.clone(), "observed": self.observed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._expect_keys(state, ("loss_sum", "observed"))
        self.loss_sum = state["loss_sum"].clone().to(torch.float64)
        self.observed = int(state["observed"])
