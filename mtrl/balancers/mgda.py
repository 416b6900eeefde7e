"""MGDA (Sener & Koltun, NeurIPS 2018): the min-norm point of the convex hull of the task gradients."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from mtrl import checks
from mtrl.balancers.base import _BLAS, BalancerError, GradientBalancer, gram_matrix
from mtrl.balancers.min_norm import min_norm_weights

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def gradient_normalizers(gram: np.ndarray, losses: Optional[np.ndarray], kind: str) -> np.ndarray:
    """Per-task divisors n_i of the gradients before the min-norm solve (Sener & Koltun's code).

    none: 1; l2: |g_i|; loss: l_i; loss+: l_i |g_i|. A zero or non-finite divisor becomes 1 (leave that
    gradient as it is) so that zero gradients or zero losses cannot produce infinities.
    """
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    if kind == "none":
        n = np.ones_like(norms)
    elif kind == "l2":
        n = norms
    else:
        n = losses if kind == "loss" else losses * norms
    return np.where(np.isfinite(n) & (n != 0.0), n, 1.0)


class MGDA(GradientBalancer):
    """Multiple-gradient descent: d = G^T w with w on the simplex minimising |G^T w|.

    The min-norm element of the convex hull of the task gradients (Désidéri's MGDA as used by Sener &
    Koltun): -d is a common descent direction, g_i . d >= |d|^2 >= 0 for every task, and d = 0 exactly
    at a Pareto-stationary point. Solved exactly on the float64 Gram matrix by Wolfe's min-norm-point
    algorithm (``min_norm.min_norm_weights``; ``tol`` = its relative optimality gap, ``max_iter`` its
    corral changes). Weights sum to 1, the mean-loss convention: identical gradients give d = g; K = 1
    gives d = g exactly.
    ``normalization`` is the authors' code option: the solve uses g_i / n_i (see
    ``gradient_normalizers``; "loss" and "loss+" need the positive task losses), and the resulting
    simplex weights are applied to the raw gradients, as that code does. "none" (default) is the paper.
    MGDA-UB (the paper's bound through the shared representation) does not apply to this framework's
    per-parameter gradients and is not offered.
    """

    name = "mgda"

    def __init__(
        self, num_tasks: int, *, normalization: str = "none", tol: float = 1e-10, max_iter: int = 1000
    ) -> None:
        super().__init__(num_tasks)
        self.normalization = checks.choice("balancer.normalization", normalization, NORMALIZATIONS)
        self.tol = checks.number("balancer.tol", tol, 0.0, strict_low=True)
        self.max_iter = checks.integer("balancer.max_iter", max_iter, 1)

    def needs_positive_losses(self) -> str | None:
        if self.normalization in ("loss", "loss+"):
            return f"normalization={self.normalization} divides each gradient by its loss"
        return None

    def _weights(self, G: Tensor, losses: Optional[Tensor]) -> Tensor:
        needs_losses = self.normalization in ("loss", "loss+")
        if needs_losses and losses is None:
            raise BalancerError(f"mgda: normalization={self.normalization} needs the task losses: combine(G, losses)")
        task_losses = self._check_losses(losses).numpy() if needs_losses else None
        self.last_gram = gram_matrix(G)
        gram = self.last_gram.numpy()
        n = gradient_normalizers(gram, task_losses, self.normalization)
        with _BLAS.limit(limits=1, user_api="blas"):
            w = min_norm_weights(gram / np.outer(n, n), tol=self.tol, max_iter=self.max_iter)
        return torch.from_numpy(w)
