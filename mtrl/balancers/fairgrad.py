"""FairGrad (Ban & Ji, ICML 2024): alpha-fair allocation of the update among the tasks."""

from __future__ import annotations

from functools import partial
from typing import Optional

import numpy as np
import torch
from scipy.optimize import least_squares
from torch import Tensor

from mtrl import checks
from mtrl.balancers.base import GradientBalancer
from mtrl.balancers.mtrl_sgd import best_sgd_iterate, weights_on_native_gram
from mtrl.balancers.power_solver import newton_power_solve, solve_power_weights

#: The authors' Meta-World solver: SGD steps, learning rate, momentum, gradient-norm clip, the floor of w
#: (also the epsilon in 1 / (w + eps)).
MTRL_STEPS, MTRL_LR, MTRL_MOMENTUM, MTRL_CLIP, MTRL_EPS = 20, 0.1, 0.5, 1.0, 1e-8


class FairGrad(GradientBalancer):
    """Weights w > 0 solving (G G^T) w = w^(-1/alpha) elementwise; direction d = G^T w.

    ``solver="least_squares"`` (default, as the authors) runs scipy's bounded least squares (w > 0,
    analytic Jacobian, ftol = xtol = gtol = ``tol``, at most ``max_iter`` evaluations);
    ``solver="newton"`` uses the damped Newton solver shared with Nash-MTL. Both solve the system
    scaled by the mean squared gradient norm with its diagonal times 1 + ``ridge`` (keeps degenerate
    Grams solvable; the result is mapped back exactly). Zero gradients get weight 0. alpha = 1 is
    Nash-MTL's system.
    Scale: the direction is not mean-normalised; scaling G by s scales d by s^((1-alpha)/(1+alpha)).
    K = 1 gives d = |g|^(-2 alpha/(1+alpha)) g (times (1+ridge)^(-alpha/(1+alpha))): a positive
    multiple of the plain gradient, not g itself.

    ``variant="mtrl"``: the procedure of the authors' Meta-World code (OptMN-Lab/fairgrad,
    mtrl_files/fairgrad.py, ``Agent.fairgrad``, the SGD version), run like there in G's dtype on the
    CPU: from w = 1/K, 20 rounds of: objective |GG w - (1 / (w + 1e-8))^(1/alpha)|^2, remember the
    current w if its objective is the lowest so far, clip the gradient to norm 1, one SGD step (lr 0.1,
    momentum 0.5), clamp w >= 1e-8. d = G^T w_best without any normalisation; ``solver``, ``tol``,
    ``max_iter`` and ``ridge`` are not used. Weights are >= 1e-8 (zero gradients get no special case);
    if no objective value is finite (e.g. float32 overflow of |GG w|^2) the mean gradient is used.
    K = 1 gives d = w g with the w > 0 that 20 steps reach: a positive multiple of g.
    """

    name = "fairgrad"

    def __init__(
        self,
        num_tasks: int,
        *,
        alpha: float = 2.0,
        solver: str = "least_squares",
        tol: float = 1e-12,
        max_iter: int = 200,
        ridge: float = 1e-8,
        variant: str = "paper",
    ) -> None:
        super().__init__(num_tasks)
        self.alpha = checks.number("balancer.alpha", alpha, 0.0, strict_low=True)
        self.solver = checks.choice("balancer.solver", solver, ("least_squares", "newton"))
        self.tol = checks.number("balancer.tol", tol, 0.0, strict_low=True)
        self.max_iter = checks.integer("balancer.max_iter", max_iter, 1)
        self.ridge = checks.number("balancer.ridge", ridge, 0.0)
        self.variant = checks.choice("balancer.variant", variant, ("paper", "mtrl"))

    def _least_squares(self, A: np.ndarray, p: float, x0: np.ndarray) -> np.ndarray:
        """Bounded least squares on r(x) = A x - x^-p, x > 0."""
        tol = max(self.tol, float(np.finfo(np.float64).eps))
        result = least_squares(
            lambda x: A @ x - x**-p,
            x0,
            jac=lambda x: A + np.diag(p * x ** (-p - 1.0)),
            bounds=(0.0, np.inf),
            ftol=tol,
            xtol=tol,
            gtol=tol,
            max_nfev=self.max_iter,
        )
        return result.x

    def _solve(self, gram: np.ndarray) -> np.ndarray:
        if self.solver == "newton":
            solver = partial(newton_power_solve, tol=self.tol, max_iter=self.max_iter)
        else:
            solver = self._least_squares
        return solve_power_weights(gram, 1.0 / self.alpha, self.ridge, solver)[0]

    def _weights(self, G: Tensor, losses: Optional[Tensor]) -> Tensor:
        if self.variant == "paper":
            return super()._weights(G, losses)
        return weights_on_native_gram(self, G, self.mtrl_weights)

    def mtrl_weights(self, gram: Tensor) -> Tensor:
        """The authors' SGD weights w_best for the Gram matrix ``gram``, in its dtype."""
        k, p = gram.shape[0], 1.0 / self.alpha

        def value_and_grad(w: Tensor) -> tuple[Tensor, Tensor]:
            # products then sums, not fused multiply-adds: equal tasks stay exactly equal (e.g. d = 0 for [g, -g])
            residual = (gram * w).sum(dim=1) - (1.0 / (w + MTRL_EPS)) ** p
            grad = 2.0 * ((gram * residual[:, None]).sum(dim=0) + p * residual * (w + MTRL_EPS) ** (-p - 1.0))
            return residual @ residual, grad

        w = best_sgd_iterate(
            torch.ones(k, dtype=gram.dtype) / k,
            value_and_grad,
            steps=MTRL_STEPS,
            lr=MTRL_LR,
            momentum=MTRL_MOMENTUM,
            evaluate_final=False,
            max_grad_norm=MTRL_CLIP,
            lower=MTRL_EPS,
        )
        return torch.full((k,), float("nan"), dtype=gram.dtype) if w is None else w
