"""PCGrad (Yu et al., NeurIPS 2020): project each task gradient off the ones it conflicts with."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from mtrl import checks
from mtrl.balancers.base import ZERO_TOL, GradientBalancer, gram_matrix

#: Added to |g_j| in the ``variant="mtrl"`` normalisation u_j = g_j / (|g_j| + eps), as that code does.
MTRL_EPS = 1e-8


class PCGrad(GradientBalancer):
    """Gradient surgery, computed on the Gram matrix only.

    For each task i, start from g_i and visit the K - 1 other tasks j in a random order drawn for that
    task (:meth:`draw_orders`; ``seed`` feeds a ``torch.Generator``); if the current g_i has
    g_i . g_j < 0, subtract (g_i . g_j / |g_j|^2) g_j (projection onto the *original* g_j, as in the
    paper). Each projected gradient is a combination sum_j A_ij g_j, so only A (K x K) is tracked: the
    inner products are (A G G^T)_ij. The direction is sum_i or mean_i of the projected gradients
    (``reduction``; default "mean" matches the mean loss convention, the paper sums). A g_j with
    |g_j|^2 <= ZERO_TOL * max_k |g_k|^2 is treated as zero (nothing is projected onto it).
    Weights are the column sums of A (divided by K for "mean").

    ``variant="mtrl"``: the procedure of facebookresearch/mtrl, mtrl/agent/pcgrad.py (the PCGrad of
    the CAGrad/FAMO/FairGrad Meta-World tables): project onto the normalised original gradients
    u_j = g_j / (|g_j| + 1e-8), g_i <- g_i - min(g_i . u_j, 0) u_j, with no zero-gradient special case
    (u_j of a zero g_j is 0), and average (``reduction`` must be "mean"). The same maths as the paper
    up to that epsilon. K = 1 returns exactly g in both variants.
    """

    name = "pcgrad"

    def __init__(
        self, num_tasks: int, *, reduction: str = "mean", seed: Optional[int] = None, variant: str = "paper"
    ) -> None:
        super().__init__(num_tasks)
        self.reduction = checks.choice("balancer.reduction", reduction, ("mean", "sum"))
        self.variant = checks.choice("balancer.variant", variant, ("paper", "mtrl"))
        if self.variant == "mtrl" and self.reduction != "mean":
            raise checks.fail("balancer.reduction", reduction, "mean with balancer.variant=mtrl")
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(checks.integer("balancer.seed", seed, 0))

    def draw_orders(self, num_tasks: int) -> np.ndarray:
        """(K, K-1) int array: row i lists the other tasks in the order task i visits them (one random draw)."""
        orders = torch.argsort(torch.rand(num_tasks, num_tasks, generator=self.generator, dtype=torch.float64), dim=1)
        orders = orders.numpy()
        return orders[orders != np.arange(num_tasks)[:, None]].reshape(num_tasks, num_tasks - 1)

    def coefficients(self, gram: np.ndarray, orders: Optional[np.ndarray] = None) -> np.ndarray:
        """The (K, K) matrix A with projected gradients = A G, for ``orders`` (default: a fresh draw)."""
        k = gram.shape[0]
        orders = self.draw_orders(k) if orders is None else orders
        sq = np.diag(gram)
        if self.variant == "mtrl":
            denom = (np.sqrt(sq) + MTRL_EPS) ** 2
        else:  # never project onto a (numerically) zero g_j
            denom = np.where(sq <= ZERO_TOL * sq.max(initial=0.0), 0.0, sq)
        coef, rows = np.eye(k), np.arange(k)
        for s in range(k - 1):  # step s: every task i projects against its s-th other task orders[i, s]
            j = orders[:, s]
            dots = np.einsum("ik,ki->i", coef, gram[:, j])  # (current g_i) . g_{j(i)}
            hit = (dots < 0) & (denom[j] > 0)
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
