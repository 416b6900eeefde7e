"""Solver of the systems (A w)_i = w_i^-p (w > 0) behind FairGrad (p = 1/alpha) and Nash-MTL (p = 1)."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from mtrl.balancers.base import ZERO_TOL, uniform_weights


def normalised_gram(gram: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """(Gram of the non-zero gradients / its mean diagonal, that scale, mask of those tasks)."""
    diag = np.diag(gram)
    top = float(diag.max()) if diag.size else 0.0
    active = diag > ZERO_TOL * top if top > 0 else np.zeros(diag.shape, dtype=bool)
    if not active.any():
        return np.zeros((0, 0)), 0.0, active
    scale = float(diag[active].mean())
    return gram[np.ix_(active, active)] / scale, scale, active


PowerSolver = Callable[[np.ndarray, float, np.ndarray], np.ndarray]


def uniform_start(A: np.ndarray, p: float) -> np.ndarray:
    """The best constant vector t*1 for (A w)_i = w_i^-p in the mean: t^(1+p) = K / (1^T A 1)."""
    k = A.shape[0]
    total = max(float(A.sum()), 1e-300)
    return np.full(k, (k / total) ** (1.0 / (1.0 + p)))


def newton_power_solve(A: np.ndarray, p: float, x0: np.ndarray, *, tol: float, max_iter: int) -> np.ndarray:
    """Solve A x = x^-p (x > 0) by damped Newton on the strictly convex potential whose gradient it is.

    The potential is h(x) = x^T A x / 2 - sum_i phi(x_i) with phi' = x^-p (phi = log for p = 1), whose
    Hessian A + p diag(x^(-p-1)) is positive definite for PSD A, so the root is its unique minimiser.
    Steps keep x > 0 (fraction-to-boundary 0.99) and are halved until h decreases (Armijo) or, once h
    is flat to rounding near the root, the relative residual max_i |(A x)_i - x_i^-p| / x_i^-p does;
    stops when that residual is <= tol, when no step helps, or after max_iter steps.
    """

    def potential(x: np.ndarray) -> float:
        barrier = np.log(x).sum() if p == 1.0 else (x ** (1.0 - p)).sum() / (1.0 - p)
        return 0.5 * float(x @ A @ x) - float(barrier)

    def residual(x: np.ndarray) -> tuple[np.ndarray, float]:
        xp = x**-p
        r = A @ x - xp
        return r, float(np.max(np.abs(r) / xp))

    x = x0.astype(np.float64).copy()
    r, err = residual(x)
    for _ in range(max_iter):
        if err <= tol:
            break
        step = np.linalg.solve(A + np.diag(p * x ** (-p - 1.0)), -r)
        neg = step < 0
        t = min(1.0, 0.99 * float(np.min(-x[neg] / step[neg]))) if neg.any() else 1.0
        f0, slope = potential(x), float(r @ step)
        while t > 1e-12:
            trial = x + t * step
            r_trial, err_trial = residual(trial)
            if potential(trial) <= f0 + 1e-4 * t * slope or err_trial < (1.0 - 1e-4 * t) * err:
                break
            t *= 0.5
        else:
            break  # no step improves either measure: converged to rounding
        x, r, err = trial, r_trial, err_trial
    return x


def solve_power_weights(
    gram: np.ndarray, p: float, ridge: float, solver: PowerSolver, start: Optional[np.ndarray] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Weights w > 0 with (gram w)_i = w_i^-p (FairGrad p = 1/alpha, Nash-MTL p = 1); also the scaled root.

    Tasks with zero gradient decouple from the system (their row and column are zero) and get weight 0.
    The solve runs on gram / s (s = mean squared norm) with its diagonal times 1 + ``ridge`` (each
    |g_i|^2 inflated by that relative amount, so the unridged system's relative residual stays ~ridge),
    which keeps the root finite when the Gram is singular (opposite or dependent gradients, K > D).
    The root x of the scaled system maps back exactly as w = x * s^(-1/(1+p)). ``start`` is a previous
    scaled root (warm start), used only when it has the same zero pattern. Returns (w, x padded to K).
    """
    k = gram.shape[0]
    A, scale, active = normalised_gram(gram)
    scaled = np.zeros(k)
    if not active.any():  # every gradient is zero: any weights give d = 0
        return uniform_weights(k), scaled
    A = A + ridge * np.diag(np.diag(A))
    warm = start is not None and np.array_equal(start > 0, active) and np.all(np.isfinite(start))
    x0 = start[active] if warm else uniform_start(A, p)
    x = solver(A, p, x0)
    if not (np.all(np.isfinite(x)) and np.all(x > 0)):
        x = uniform_start(A, p)
    scaled[active] = x
    return scaled * scale ** (-1.0 / (1.0 + p)), scaled
