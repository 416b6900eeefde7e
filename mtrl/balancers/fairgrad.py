"""FairGrad (Ban & Ji, ICML 2024): alpha-fair allocation of the update among the tasks."""

from __future__ import annotations

from functools import partial

import numpy as np
from scipy.optimize import least_squares

from mtrl import checks
from mtrl.balancers.base import GradientBalancer
from mtrl.balancers.power_solver import newton_power_solve, solve_power_weights


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
    """

    name = "fairgrad"

    def __init__(
        self, num_tasks: int, *, alpha: float = 2.0, solver: str = "least_squares",
        tol: float = 1e-12, max_iter: int = 200, ridge: float = 1e-8,
    ) -> None:
        super().__init__(num_tasks)
        self.alpha = checks.number("balancer.alpha", alpha, 0.0, strict_low=True)
        self.solver = checks.choice("balancer.solver", solver, ("least_squares", "newton"))
        self.tol = checks.number("balancer.tol", tol, 0.0, strict_low=True)
        self.max_iter = checks.integer("balancer.max_iter", max_iter, 1)
        self.ridge = checks.number("balancer.ridge", ridge, 0.0)

    def _least_squares(self, A: np.ndarray, p: float, x0: np.ndarray) -> np.ndarray:
        """Bounded least squares on r(x) = A x - x^-p, x > 0."""
        tol = max(self.tol, float(np.finfo(np.float64).eps))
        result = least_squares(
            lambda x: A @ x - x**-p, x0, jac=lambda x: A + np.diag(p * x ** (-p - 1.0)),
            bounds=(0.0, np.inf), ftol=tol, xtol=tol, gtol=tol, max_nfev=self.max_iter,
        )
        return result.x

    def _solve(self, gram: np.ndarray) -> np.ndarray:
        if self.solver == "newton":
            solver = partial(newton_power_solve, tol=self.tol, max_iter=self.max_iter)
        else:
            solver = self._least_squares
        return solve_power_weights(gram, 1.0 / self.alpha, self.ridge, solver)[0]
