"""FAMO (Liu et al., NeurIPS 2023): O(1) loss weighting that equalises the tasks' log-loss decrease."""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence, Union

import torch
from torch import Tensor

from mtrl import checks
from mtrl.balancers.base import BalancerError, LossBalancer

#: Adam's defaults, as the authors use them for the logits.
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


class FAMO(LossBalancer):
    """Task logits xi, z = softmax(xi); shifted losses D_i = max(l_i - l_i^min, 0) + eps.

    ``weights(losses)`` are the gradient coefficients of the paper's step loss
    sum_i (z_i / c) log D_i with c = sum_j z_j / D_j held constant: z_i / D_i / sum_j z_j / D_j (they sum
    to 1: uniform logits and equal losses give the mean gradient; K = 1 gives exactly g).
    ``update(before, after)`` takes delta_i = log D_i(before) - log D_i(after) on the same batch, the
    logit gradient J^T delta (J = diag(z) - z z^T, the softmax Jacobian; zero when every log-loss
    drops equally) plus L2 decay ``gamma`` * xi, and applies one Adam step with ``lr`` (betas
    0.9/0.999, eps 1e-8, torch's Adam semantics, float64 logits).
    Losses at or below l^min are clamped to D = eps.

    ``variant="mtrl"`` (alias ``"authors"``): the authors' Meta-World code (Cranial-XIX/FAMO,
    mtrl_files/famo.py, ``Agent.update_critic``) multiplies by c where the paper divides: coefficients
    z_i c / (l_i + eps) with c = sum_j z_j / (l_j + eps) (not normalised; K = 1 gives g / (l + eps)^2).
    It has no minimum losses, so ``min_losses`` must be 0 there (anything else is refused); eps (default
    1e-8, as there) is added to l_i, and negative losses count as 0 instead of giving NaN. The logit
    dynamics are the paper's, as in that code. Its MT10 runs (mtrl_files/run.sh) use gamma = 0.01,
    lr = 0.025 and balance only the critic loss: the config's values and ``apply_to: [critic]``.
    """

    name = "famo"
    positive_losses = "it balances the decrease of log-losses"
    default_apply_to = ("critic",)
    needs_after_step = True

    def __init__(
        self,
        num_tasks: int,
        *,
        lr: float = 0.025,
        gamma: float = 0.01,
        min_losses: Union[float, Sequence[float]] = 0.0,
        eps: float = 1e-8,
        variant: str = "paper",
    ) -> None:
        super().__init__(num_tasks)
        self.lr = checks.number("balancer.lr", lr, 0.0, strict_low=True)
        self.gamma = checks.number("balancer.gamma", gamma, 0.0)
        self.eps = checks.number("balancer.eps", eps, 0.0, strict_low=True)
        variant = checks.choice("balancer.variant", variant, ("paper", "mtrl", "authors"))
        self.variant = "mtrl" if variant == "authors" else variant
        self.min_losses = self._check_min_losses(min_losses)
        if self.variant == "mtrl" and bool(self.min_losses.any()):
            raise checks.fail(
                "balancer.min_losses", min_losses, "0 with balancer.variant=mtrl (the authors' code has none)"
            )
        self.logits = torch.zeros(num_tasks, dtype=torch.float64)
        self.exp_avg = torch.zeros(num_tasks, dtype=torch.float64)
        self.exp_avg_sq = torch.zeros(num_tasks, dtype=torch.float64)
        self.adam_step = 0

    def _check_min_losses(self, value: Union[float, Sequence[float]]) -> Tensor:
        """A scalar or a length-K list of finite numbers -> (K,) float64 tensor."""
        if isinstance(value, Tensor):
            value = value.tolist()
        values = [value] * self.num_tasks if isinstance(value, numbers.Real) else list(value)
        if len(values) != self.num_tasks:
            raise BalancerError(
                f"{self.name}: min_losses must be a number or {self.num_tasks} numbers, got {len(values)}"
            )
        return torch.tensor([checks.number("balancer.min_losses", v) for v in values], dtype=torch.float64)

    def task_weights(self) -> Tensor:
        """The current task weights z = softmax(logits)."""
        return torch.softmax(self.logits, dim=0)

    def _log_shifted(self, losses: Tensor) -> Tensor:
        """log D_i = log(max(l_i - l_i^min, 0) + eps) in float64."""
        return torch.log((self._check_losses(losses) - self.min_losses).clamp_min(0.0) + self.eps)

    def weights(self, losses: Tensor) -> Tensor:
        q = self.task_weights() / self._log_shifted(losses).exp()
        c = q.sum()
        coef = q / c if self.variant == "paper" else q * c
        return coef.to(device=losses.device, dtype=losses.dtype)

    def logit_gradient(self, losses_before: Tensor, losses_after: Tensor) -> Tensor:
        """J^T delta for the softmax Jacobian J: z * (delta - z . delta) (no weight decay)."""
        delta = self._log_shifted(losses_before) - self._log_shifted(losses_after)
        z = self.task_weights()
        return z * (delta - z @ delta)

    def update(self, losses_before: Tensor, losses_after: Tensor) -> None:
        """One Adam step on the logits with gradient J^T delta + gamma * logits."""
        grad = self.logit_gradient(losses_before, losses_after) + self.gamma * self.logits
        (b1, b2), self.adam_step = ADAM_BETAS, self.adam_step + 1
        self.exp_avg.mul_(b1).add_(grad, alpha=1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(1 - b2**self.adam_step)).add_(ADAM_EPS)
        self.logits.addcdiv_(self.exp_avg, denom, value=-self.lr / (1 - b1**self.adam_step))

    def state_dict(self) -> dict[str, Any]:
        return {
            "logits": self.logits.clone(),
            "exp_avg": self.exp_avg.clone(),
            "exp_avg_sq": self.exp_avg_sq.clone(),
            "adam_step": self.adam_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._expect_keys(state, ("logits", "exp_avg", "exp_avg_sq", "adam_step"))
        for key in ("logits", "exp_avg", "exp_avg_sq"):
            setattr(self, key, state[key].clone().to(torch.float64))
        self.adam_step = int(state["adam_step"])
