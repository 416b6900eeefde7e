"""PCGrad (Yu et al., NeurIPS 2020): project each task gradient off the ones it conflicts with."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from mtrl import checks
from mtrl.balancers.base import ZERO_TOL, GradientBalancer, gram_matrix

#: Added to |g_j| in the ``normalize=True`` (CAGrad/mtrl code base) variant, as that code does.
NORMALIZE_EPS = 1e-8


class PCGrad(GradientBalancer):
    """Gradient surgery, computed on the Gram matrix only.

    For each task i, start from g_i and, for every other task j in an independent random order
    (``seed`` feeds a ``torch.Generator``), if the current g_i has g_i . g_j < 0 subtract
    (g_i . g_j / |g_j|^2) g_j (projection onto the *original* g_j, as in the paper). Each projected
    gradient is a combination sum_j A_ij g_j, so only A (K x K) is tracked: the inner products are
    (A G G^T)_ij. The direction is sum_i or mean_i of the projected gradients (``reduction``; default
    "mean" matches the mean loss convention, the paper sums). ``normalize=True`` is the
    mtrl/CAGrad-code variant that projects onto g_j / (|g_j| + 1e-8): identical maths up to that epsilon.
    A g_j with |g_j|^2 <= ZERO_TOL * max_k |g_k|^2 is treated as zero (nothing is projected onto it).
    K = 1 returns exactly g. Weights are the column sums of A (divided by K for "mean").
    """

    name = "pcgrad"

    def __init__(
        self, num_tasks: int, *, reduction: str = "mean", seed: Optional[int] = None, normalize: bool = False
    ) -> None:
        super().__init__(num_tasks)
        self.reduction = checks.choice("balancer.reduction", reduction, ("mean", "sum"))
        self.normalize = checks.flag("balancer.normalize", normalize)
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(checks.integer("balancer.seed", seed, 0))

    def coefficients(self, gram: np.ndarray) -> np.ndarray:
        """The (K, K) matrix A with projected gradients = A G; draws one set of random orders."""
        k = gram.shape[0]
        orders = torch.argsort(torch.rand(k, k, generator=self.generator, dtype=torch.float64), dim=1).numpy()
        sq = np.diag(gram).copy()
        denom = (np.sqrt(sq) + NORMALIZE_EPS) ** 2 if self.normalize else sq
        denom[sq <= ZERO_TOL * sq.max(initial=0.0)] = 0.0  # never project onto a (numerically) zero g_j
        coef, rows = np.eye(k), np.arange(k)
        for s in range(k):  # step s: every task i projects against its s-th task orders[i, s]
            j = orders[:, s]
            dots = np.einsum("ik,ki->i", coef, gram[:, j])  # (current g_i) . g_{j(i)}
            hit = (dots < 0) & (j != rows) & (denom[j] > 0)
            coef[rows, j] -= np.where(hit, dots / np.where(hit, denom[j], 1.0), 0.0)
        return coef

    def projected(self, G: Tensor) -> Tensor:
        """The (K, D) projected task gradients (advances the random-order generator like combine)."""
        self._check_matrix(G)
        coef = torch.from_numpy(self.coefficients(gram_matrix(G).numpy()))
        return coef.to(device=G.device, dtype=G.dtype) @ G

    def _solve(self, gram: np.ndarray) -> np.ndarray:
        w = self.coefficients(gram).sum(axis=0)
        return w / gram.shape[0] if self.reduction == "mean" else w

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._expect_keys(state, ("generator",))
        self.generator.set_state(state["generator"].clone())
