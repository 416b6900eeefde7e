"""Shared machinery of the task balancers: base classes, option checks, Gram helpers.

Conventions (every method follows them):
- ``G`` is the (K, D) matrix of per-task gradients of the *shared* parameters, one row per task.
- Directions follow a *mean* loss convention: the uniform balancer's direction is mean_i g_i, and with
  K = 1 every method returns a positive multiple of the plain gradient (exactly it where the method
  permits; each class docstring says which).
- Every gradient method returns weights ``w`` with ``direction == G^T w`` (up to float rounding), so
  all of them cost one (K, D) x (D, K) Gram product plus a K x K solve in float64 plus one G^T w.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from torch import Tensor

from mtrl import checks
from mtrl.errors import UserError

#: Controls the BLAS thread pools (numpy's and scipy's OpenBLAS) around the small K x K solves.
_BLAS = ThreadpoolController()

#: A task whose squared gradient norm is below this fraction of the largest one counts as "zero".
ZERO_TOL = 1e-16


class BalancerError(UserError):
    """A bad balancer name, option or value; one line that names the value and what is allowed."""


# ----------------------------------------------------------------------------- Gram helpers
def gram_matrix(G: Tensor) -> Tensor:
    """G G^T as a float64 CPU tensor: the product runs in G's dtype/device, only the K x K result is cast."""
    return (G @ G.T).detach().to(device="cpu", dtype=torch.float64)


def uniform_weights(num_tasks: int) -> np.ndarray:
    """The mean-gradient weights 1/K."""
    return np.full(num_tasks, 1.0 / num_tasks)


# ----------------------------------------------------------------------------- base classes
class Balancer:
    """Common part of every balancer: the task count, input checks and an empty state."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    #: Whether :meth:`update` needs the losses re-evaluated after the optimiser step (FAMO's logit step).
    needs_after_step: ClassVar[bool] = False
    #: Whether the weights are constants (uniform): no host work, so the whole update compiles as one graph.
    static: ClassVar[bool] = False

    #: Why the method needs positive task losses (it takes their logarithm, angles or ratios), or None.
    positive_losses: ClassVar[str | None] = None
    #: The networks it balances unless `balancer.apply_to` says otherwise (positive-loss methods: the critic).
    default_apply_to: ClassVar[tuple[str, ...]] = ("critic", "actor")

    def needs_positive_losses(self) -> str | None:
        """Why this balancer, as configured, needs every task loss > 0 (None: any real losses will do)."""
        return self.positive_losses

    def __init__(self, num_tasks: int) -> None:
        self.num_tasks = checks.integer("balancer.num_tasks", num_tasks, 1)
        #: float64 G G^T of the last combine when the method computed it (gradient methods), else None;
        #: gradient_stats reuses it instead of another (K, D) x (D, K) product.
        self.last_gram: Optional[Tensor] = None

    def update(self, losses_before: Tensor, losses_after: Tensor) -> None:
        """Post-step hook (FAMO's logit step), called when ``needs_after_step``; a no-op otherwise."""

    def diagnostics(self) -> dict[str, Any]:
        """Method-specific values worth logging after a step ((K,) vectors or floats; None = not yet)."""
        return {}

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

    def _check_loss_shape(self, losses: Tensor) -> None:
        """Require a (K,) tensor (a shape check only: nothing is read from the device)."""
        if not (isinstance(losses, Tensor) and losses.shape == (self.num_tasks,)):
            shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise BalancerError(f"{self.name}: expected losses of shape ({self.num_tasks},), got {shape}")

    def _check_losses(self, losses: Tensor) -> Tensor:
        """Require a (K,) tensor; return it detached as float64 on the CPU (a host copy: for host-side maths)."""
        self._check_loss_shape(losses)
        return losses.detach().to(device="cpu", dtype=torch.float64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_tasks={self.num_tasks})"


class GradientBalancer(Balancer):
    """A method that maps the per-task gradient matrix G to one update direction d = G^T w."""

    kind: ClassVar[str] = "gradient"

    def combine(self, G: Tensor, losses: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """(direction (D,), weights (K,)) in G's dtype and device, with direction = G^T weights.

        ``losses`` (K,) are the task losses behind G, for methods that need them (e.g. Pareto MTL's
        constraints); the others ignore them. Non-finite weights fall back to the mean gradient.
        """
        self._check_matrix(G)
        w = self._weights(G, losses)
        if not torch.isfinite(w).all():
            w = torch.from_numpy(uniform_weights(self.num_tasks))
        w = w.to(device=G.device, dtype=G.dtype)
        return w @ G, w

    def _weights(self, G: Tensor, losses: Optional[Tensor]) -> Tensor:
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
