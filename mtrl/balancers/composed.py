"""A loss-weighting method followed by a gradient method: IGB's combination with gradient balancing.

Dai et al. (UAI 2023) weight the task losses first and give the gradients of the weighted losses to a
gradient method (their code, YanqiDai/IGB4MTL ``experiments/*/trainer.py``, passes the loss method's
weighted losses to the gradient method's ``backward``). Here any loss method composes with any
gradient method: ``make("nashmtl", K, loss_weighting="igb")``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from mtrl.balancers.base import BalancerError, GradientBalancer, LossBalancer


class Composed(GradientBalancer):
    """Row i of G scaled by K c_i, c = the loss method's coefficients, then combined by the gradient method.

    With c the coefficients of ``loss_weighting.weights(losses)`` (their direction is sum_i c_i g_i),
    the gradient method sees G' = diag(K c) G: the gradients of the weighted task losses K c_i l_i
    (uniform c = 1/K leaves G unchanged; for igb, K c_i g_i = w_i g_i / l_i, the gradient of
    w_i log l_i as the authors compute it). The returned weights are K c * w' for the gradient
    method's weights w', so direction = G^T weights. Non-finite c fall back to uniform.
    ``update`` (FAMO's post-step logit update) goes to the loss method; ``last_gram`` is the Gram of
    the unscaled G when every scale is non-zero (None otherwise: the caller then recomputes it).
    """

    def __init__(self, gradient: GradientBalancer, loss_weighting: LossBalancer) -> None:
        kinds_ok = gradient.kind == "gradient" and loss_weighting.kind == "loss"
        if not kinds_ok or gradient.num_tasks != loss_weighting.num_tasks:
            raise BalancerError(f"cannot compose {gradient!r} with loss weighting {loss_weighting!r}")
        super().__init__(gradient.num_tasks)
        self.gradient, self.loss_weighting = gradient, loss_weighting
        self.name = f"{gradient.name}+{loss_weighting.name}"  # type: ignore[misc]  # instance-level name

    def needs_positive_losses(self) -> str | None:
        return self.loss_weighting.needs_positive_losses() or self.gradient.needs_positive_losses()

    @property
    def needs_after_step(self) -> bool:  # type: ignore[override]
        """Whether the loss method needs the post-step losses (FAMO)."""
        return self.loss_weighting.needs_after_step

    def combine(self, G: Tensor, losses: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        self._check_matrix(G)
        if losses is None:
            raise BalancerError(f"{self.name}: needs the task losses for its loss weighting")
        scale = self.num_tasks * self.loss_weighting.weights(losses).detach().to(device=G.device, dtype=G.dtype)
        if not torch.isfinite(scale).all():
            scale = torch.ones_like(scale)
        direction, w = self.gradient.combine(scale[:, None] * G, losses)
        self.last_gram = self._unscaled_gram(scale)
        return direction, None if w is None else scale * w

    def _unscaled_gram(self, scale: Tensor) -> Optional[Tensor]:
        """G G^T from the gradient method's diag(s) G G^T diag(s), when it has one and no s_i is 0."""
        gram, s = self.gradient.last_gram, scale.detach().to(device="cpu", dtype=torch.float64)
        if gram is None or not bool((s != 0).all()):
            return None
        return gram / torch.outer(s, s)

    def update(self, losses_before: Tensor, losses_after: Tensor) -> None:
        self.loss_weighting.update(losses_before, losses_after)

    def diagnostics(self) -> dict[str, Any]:
        """Both halves' values, the loss-weighting half's under `loss_weighting/`."""
        inner = {f"loss_weighting/{k}": v for k, v in self.loss_weighting.diagnostics().items()}
        return {**self.gradient.diagnostics(), **inner}

    def state_dict(self) -> dict[str, Any]:
        return {"loss_weighting": self.loss_weighting.state_dict(), "gradient": self.gradient.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._expect_keys(state, ("loss_weighting", "gradient"))
        self.loss_weighting.load_state_dict(state["loss_weighting"])
        self.gradient.load_state_dict(state["gradient"])

    def __repr__(self) -> str:
        return f"Composed({self.gradient!r}, loss_weighting={self.loss_weighting!r})"
