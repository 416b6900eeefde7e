"""Shared machinery of the task balancers: base classes, option checks, Gram helpers, K x K solvers.

Conventions (every method follows them):
- ``G`` is the (K, D) matrix of per-task gradients of the *shared* parameters, one row per task.
- Directions follow a *mean* loss convention: the uniform balancer's direction is mean_i g_i, and with
  K = 1 every method returns a positive multiple of the plain gradient (exactly it where the method
  permits; each class docstring says which).
- Every gradient method returns weights ``w`` with ``direction == G^T w`` (up to float rounding), so
  all of them cost one (K, D) x (D, K) Gram product plus a K x K solve in float64 plus one G^T w.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from torch import Tensor

from mtrl.errors import UserError

#: Controls the BLAS thread pools (numpy's and scipy's OpenBLAS) around the small K x K solves.
_BLAS = ThreadpoolController()

#: A task whose squared gradient norm is below this fraction of the largest one counts as "zero".
ZERO_TOL = 1e-16


class BalancerError(UserError, ValueError):
    """A bad balancer name, option or value; one line that names the value and what is allowed."""


# ----------------------------------------------------------------------------- option checks
def check_number(owner: str, name: str, value: Any, *, low: float, strict: bool) -> float:
    """Return ``value`` as a float if it is a finite number > low (strict) or >= low, else raise."""
    bound = f"> {low:g}" if strict else f">= {low:g}"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= low if strict else value < low):
        raise BalancerError(f"{owner}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_int(owner: str, name: str, value: Any, *, low: int) -> int:
    """Return ``value`` if it is an integer >= low, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise BalancerError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_choice(owner: str, name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise."""
    if value not in choices:
        raise BalancerError(f"{owner}: {name} must be one of {'|'.join(map(str, choices))}, got {value!r}")
    return value


# ----------------------------------------------------------------------------- Gram helpers
def gram_matrix(G: Tensor) -> Tensor:
    """G G^T as a float64 CPU tensor: the product runs in G's dtype/device, only the K x K result is cast."""
    return (G @ G.T).detach().to(device="cpu", dtype=torch.float64)


def uniform_weights(num_tasks: int) -> np.ndarray:
    """The mean-gradient weights 1/K."""
    return np.full(num_tasks, 1.0 / num_tasks)


def normalised_gram(gram: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """(Gram of the non-zero gradients / its mean diagonal, that scale, mask of those tasks)."""
    diag = np.diag(gram)
    top = float(diag.max()) if diag.size else 0.0
    active = diag > ZERO_TOL * top if top > 0 else np.zeros(diag.shape, dtype=bool)
    if not active.any():
        return np.zeros((0, 0)), 0.0, active
    scale = float(diag[active].mean())
    return gram[np.ix_(active, active)] / scale, scale, active


# ----------------------------------------------------------------------------- (A w) = w^-p solvers
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


# ----------------------------------------------------------------------------- base classes
class Balancer:
    """Common part of every balancer: the task count, input checks and an empty state."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""

    def __init__(self, num_tasks: int) -> None:
        self.num_tasks = check_int(self.name, "num_tasks", num_tasks, low=1)
        self.num_fallbacks = 0  # times a solve gave non-finite weights and uniform ones were used

    def update(self, losses_before: Tensor, losses_after: Tensor) -> None:
        """Post-step hook (FAMO's logit step); a no-op for every other method."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to reproduce the next output; empty for stateless methods."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._expect_keys(state, ())

    def _expect_keys(self, state: Mapping[str, Any], keys: Sequence[str]) -> None:
        """Reject a state dict whose keys are not exactly ``keys`` (a checkpoint of another balancer)."""
        if set(state) != set(keys):
            raise BalancerError(f"{self.name}: state_dict keys {sorted(state)} != expected {sorted(keys)}")

    def _check_matrix(self, G: Tensor) -> None:
        """Require a floating (K, D) tensor with K = num_tasks."""
        if not (isinstance(G, Tensor) and G.dim() == 2 and G.shape[0] == self.num_tasks and G.is_floating_point()):
            shape = tuple(G.shape) if isinstance(G, Tensor) else type(G).__name__
            raise BalancerError(f"{self.name}: expected a floating ({self.num_tasks}, D) gradient matrix, got {shape}")

    def _check_losses(self, losses: Tensor) -> Tensor:
        """Require a (K,) tensor; return it detached as float64 on the CPU."""
        if not (isinstance(losses, Tensor) and losses.shape == (self.num_tasks,)):
            shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise BalancerError(f"{self.name}: expected losses of shape ({self.num_tasks},), got {shape}")
        return losses.detach().to(device="cpu", dtype=torch.float64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_tasks={self.num_tasks})"


class GradientBalancer(Balancer):
    """A method that maps the per-task gradient matrix G to one update direction d = G^T w."""

    kind: ClassVar[str] = "gradient"

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)
        self.last_gram: Optional[Tensor] = None  # float64 G G^T of the last combine (for gradient_stats)

    def combine(self, G: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """(direction (D,), weights (K,)) in G's dtype and device, with direction = G^T weights."""
        self._check_matrix(G)
        w = self._weights(G)
        if not torch.isfinite(w).all():
            self.num_fallbacks += 1
            w = torch.from_numpy(uniform_weights(self.num_tasks))
        w = w.to(device=G.device, dtype=G.dtype)
        return w @ G, w

    def _weights(self, G: Tensor) -> Tensor:
        """float64 CPU weights from the Gram matrix (subclasses that may skip the Gram override this)."""
        self.last_gram = gram_matrix(G)
        # Multi-threaded BLAS on K x K problems only fights torch's threads (4x slower at K=50 here).
        with _BLAS.limit(limits=1, user_api="blas"):
            weights = self._solve(self.last_gram.numpy())
        return torch.from_numpy(np.asarray(weights, dtype=np.float64))

    def _solve(self, gram: np.ndarray) -> np.ndarray:
        """The method proper: float64 (K, K) Gram -> float64 (K,) weights."""
        raise NotImplementedError


class LossBalancer(Balancer):
    """A method that only reweights the per-task losses (no per-task gradients needed)."""

    kind: ClassVar[str] = "loss"

    def weights(self, losses: Tensor) -> Tensor:
        """(K,) coefficients c on the task losses: the update direction is sum_i c_i g_i."""
        raise NotImplementedError

    def combine(self, G: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
        """Convenience for tests/benchmarks: (G^T c, c) with c = weights(losses); advances state like weights()."""
        self._check_matrix(G)
        c = self.weights(losses).to(device=G.device, dtype=G.dtype)
        return c @ G, c
