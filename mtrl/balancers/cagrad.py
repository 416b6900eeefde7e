"""CAGrad (Liu et al., NeurIPS 2021): the best worst-case task improvement near the mean gradient."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from mtrl import checks
from mtrl.balancers.base import GradientBalancer, uniform_weights
from mtrl.balancers.mtrl_sgd import best_sgd_iterate, weights_on_native_gram

#: |g_w*| <= DEGENERATE * |g0| means 0 is (nearly) in the hull of the gradients: solve the primal instead.
DEGENERATE = 1e-4
#: The authors' Meta-World solver: SGD steps, learning rate (MT50's K = 50 gets its own), momentum, and the
#: 1e-4 they add under every square root and to |g_w| before dividing.
MTRL_STEPS, MTRL_LR, MTRL_LR_K50, MTRL_MOMENTUM, MTRL_EPS = 20, 25.0, 50.0, 0.5, 1e-4


class CAGrad(GradientBalancer):
    """Conflict-averse direction d maximising min_i g_i . d subject to |d - g0| <= c |g0|.

    Solved through the dual on the simplex, w* = argmin_w g_w . g0 + c |g0| |g_w| (g_w = G^T w), with
    SLSQP (analytic gradient, ``tol`` = its ftol on the dual value, ``max_iter`` iterations) on the
    Gram matrix scaled by its mean diagonal; then d = g0 + (c |g0| / |g_w*|) g_w*, i.e. weights
    1/K + (c |g0| / |g_w*|) w*. Accuracy: the dual value to ~tol; min_i g_i . d, first order in the
    error of w, to ~1e-6 relative with the default tol = 1e-12 (a few ms at K = 50).
    If |g_w*| <= 1e-4 |g0| (0 is, or nearly is, in the hull of the gradients) that formula is
    undetermined or ill-conditioned, so the primal itself, max t s.t. G d >= t, |d - g0| <= c|g0| with
    d = G^T(1/K + v), is solved by SLSQP instead (e.g. d = 0 when c >= 1).
    ``rescale=True`` (the authors' code) divides d by 1 + c^2; the paper's d is ``rescale=False``.
    c = 0 gives the mean gradient. K = 1 gives (1 + c) g, or (1 + c) / (1 + c^2) g with rescale:
    a positive multiple of the plain gradient (exactly g when c = 0).

    ``variant="mtrl"``: the procedure of the authors' Meta-World code (Cranial-XIX/CAGrad,
    mtrl/mtrl_files/cagrad.py, ``Agent.cagrad``), run like there in G's dtype on the CPU: GG = G G^T,
    s = mean_i sqrt(GG_ii + 1e-4), A = GG / s^2, b = row means of A, c' = c sqrt(mean(b) + 1e-4);
    w = softmax(v) from v = 0 minimises w.b + c' sqrt(w.A w + 1e-4) by 20 SGD steps (lr 25, or 50 when
    K = 50; momentum 0.5), keeping the best of the 21 iterates evaluated; lam = c' / (sqrt(w.A w +
    1e-4) + 1e-4); d = sum_k (1/K + lam w_k) g_k / (1 + c^2). The returned ``weights`` are those
    combination coefficients (d = G^T weights); softmax(v_best), the authors' task weights, is kept in
    :attr:`simplex_weights`. ``rescale`` must stay true; ``tol`` and ``max_iter`` are not used.
    c = 0 gives the mean gradient; K = 1 gives (1 + lam) / (1 + c^2) g with lam = c' / (sqrt(r + 1e-4)
    + 1e-4), r = |g|^2 / (|g|^2 + 1e-4): a positive multiple of g (about (1 + c) / (1 + c^2) g), exactly
    g when c = 0. If no objective value is finite the mean gradient is used.
    """

    name = "cagrad"

    def __init__(
        self,
        num_tasks: int,
        *,
        c: float = 0.9,
        rescale: bool = True,
        tol: float = 1e-12,
        max_iter: int = 200,
        variant: str = "paper",
    ) -> None:
        super().__init__(num_tasks)
        self.c = checks.number("balancer.c", c, 0.0)
        self.rescale = checks.flag("balancer.rescale", rescale)
        self.tol = checks.number("balancer.tol", tol, 0.0, strict_low=True)
        self.max_iter = checks.integer("balancer.max_iter", max_iter, 1)
        self.variant = checks.choice("balancer.variant", variant, ("paper", "mtrl"))
        if self.variant == "mtrl" and not self.rescale:
            raise checks.fail(
                "balancer.rescale", rescale, "true with balancer.variant=mtrl (the authors divide by 1 + c^2)"
            )
        #: softmax(v_best) of the last ``variant="mtrl"`` combine (the authors' task weights); None otherwise.
        self.simplex_weights: Optional[Tensor] = None

    def dual_weights(self, A: np.ndarray) -> np.ndarray:
        """argmin over the simplex of w.(A u) + c sqrt(u.A u) sqrt(w.A w), u = 1/K (A: scaled Gram)."""
        k = A.shape[0]
        u = uniform_weights(k)
        b = A @ u
        rho = self.c * np.sqrt(max(float(u @ b), 0.0))

        def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
            aw = A @ w
            norm = np.sqrt(max(float(w @ aw), 0.0) + 1e-20)
            return float(w @ b) + rho * norm, b + rho * aw / norm

        result = minimize(
            objective,
            u,
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * k,
            constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)},),
            options={"ftol": self.tol, "maxiter": self.max_iter},
        )
        w = np.clip(np.nan_to_num(result.x, nan=0.0), 0.0, None)
        w = w / w.sum() if w.sum() > 0 else u
        return w if objective(w)[0] <= objective(u)[0] else u

    def primal_weights(self, A: np.ndarray) -> np.ndarray:
        """Weights u + v of d = G^T (u + v) maximising min_i (A (u + v))_i s.t. v^T A v <= c^2 u^T A u (SLSQP)."""
        k = A.shape[0]
        u = uniform_weights(k)
        radius_sq = self.c**2 * max(float(u @ A @ u), 0.0)
        objective = np.zeros(k + 1)
        objective[-1] = -1.0  # variables (v, t): maximise t
        result = minimize(
            lambda x: -x[-1],
            np.append(np.zeros(k), float((A @ u).min())),
            jac=lambda x: objective,
            method="SLSQP",
            constraints=(
                {
                    "type": "ineq",
                    "fun": lambda x: A @ (u + x[:-1]) - x[-1],
                    "jac": lambda x: np.hstack([A, -np.ones((k, 1))]),
                },
                {
                    "type": "ineq",
                    "fun": lambda x: np.array([radius_sq - x[:-1] @ A @ x[:-1]]),
                    "jac": lambda x: np.append(-2.0 * (A @ x[:-1]), 0.0)[None],
                },
            ),
            options={"ftol": self.tol, "maxiter": self.max_iter},
        )
        v = np.nan_to_num(result.x[:-1])
        excess = float(v @ A @ v) / radius_sq if radius_sq > 0 else 0.0
        return u + (v / np.sqrt(excess) if excess > 1.0 else v)  # pull back onto the ball if outside

    def _solve(self, gram: np.ndarray) -> np.ndarray:
        k = gram.shape[0]
        u = uniform_weights(k)
        scale = float(np.diag(gram).mean())
        if self.c == 0.0 or scale <= 0.0:
            return u
        A = gram / scale
        g0_norm = np.sqrt(max(float(u @ A @ u), 0.0))
        if g0_norm == 0.0:  # the ball is the single point g0 = 0
            return u
        w = np.ones(1) if k == 1 else self.dual_weights(A)
        gw_norm = np.sqrt(max(float(w @ A @ w), 0.0))
        if gw_norm > DEGENERATE * g0_norm:
            weights = u + (self.c * g0_norm / gw_norm) * w
        else:  # 0 is (nearly) in the hull of the g_i: the dual does not determine d, solve the primal
            weights = self.primal_weights(A)
        return weights / (1.0 + self.c**2) if self.rescale else weights

    def _weights(self, G: Tensor, losses: Optional[Tensor]) -> Tensor:
        if self.variant == "paper":
            return super()._weights(G, losses)
        return weights_on_native_gram(self, G, self.mtrl_coefficients)

    def mtrl_coefficients(self, gram: Tensor) -> Tensor:
        """The authors' combination coefficients (1/K + lam w) / (1 + c^2), in the dtype of ``gram`` (G G^T)."""
        k = gram.shape[0]
        scale = (gram.diagonal() + MTRL_EPS).sqrt().mean()
        A = gram / scale**2
        b = A.mean(dim=1)
        rho = self.c * (b.mean() + MTRL_EPS).sqrt()

        def value_and_grad(v: Tensor) -> tuple[Tensor, Tensor]:
            w = torch.softmax(v, dim=0)
            norm = (w @ A @ w + MTRL_EPS).sqrt()
            grad_w = b + rho * (A @ w + A.T @ w) / (2 * norm)
            return w @ b + rho * norm, w * (grad_w - w @ grad_w)  # softmax Jacobian^T grad_w

        v = best_sgd_iterate(
            torch.zeros(k, dtype=gram.dtype),
            value_and_grad,
            steps=MTRL_STEPS,
            lr=MTRL_LR_K50 if k == 50 else MTRL_LR,
            momentum=MTRL_MOMENTUM,
            evaluate_final=True,
        )
        if v is None:
            self.simplex_weights = None
            return torch.full((k,), float("nan"), dtype=gram.dtype)  # combine falls back to the mean
        w = self.simplex_weights = torch.softmax(v, dim=0)
        lam = rho / ((w @ A @ w + MTRL_EPS).sqrt() + MTRL_EPS)
        return (1.0 / k + lam * w) / (1.0 + self.c**2)
