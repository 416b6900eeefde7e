"""Nash-MTL (Navon et al., ICML 2022): the Nash bargaining solution among the task gradients."""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from mtrl import checks
from mtrl.balancers.base import GradientBalancer, gram_matrix
from mtrl.balancers.power_solver import newton_power_solve, solve_power_weights


class NashMTL(GradientBalancer):
    """Weights w > 0 solving (G G^T) w = 1/w; direction d = G^T w.

    Scheme (replaces the paper's sequence of convex programs): the system is the stationarity
    condition of the strictly convex h(w) = |G^T w|^2 / 2 - sum_i log w_i, minimised by damped Newton
    (see ``newton_power_solve``; stops at relative residual ``tol`` or ``max_iter`` steps), warm-started
    from the previous solution, on the Gram scaled by the mean squared norm, diagonal times 1 + ``ridge``.
    Zero gradients get weight 0. ``update_every`` = n re-solves on every n-th call and reuses the
    previous weights in between (as the authors; their MT10 runs use 1, 50, 100); only solving calls
    compute the Gram. ``max_norm`` (default None = off) rescales d and w so |d| <= max_norm, the
    authors' clipping of the combined gradient.
    Scale: |g_i . d| = 1/w_i, d is invariant to scaling G. K = 1 gives d = g / |g| (times
    (1+ridge)^(-1/2)): the unit-norm plain gradient, not g itself.
    """

    name = "nashmtl"

    def __init__(
        self,
        num_tasks: int,
        *,
        update_every: int = 1,
        max_norm: Optional[float] = None,
        tol: float = 1e-10,
        max_iter: int = 100,
        ridge: float = 1e-8,
    ) -> None:
        super().__init__(num_tasks)
        self.update_every = checks.integer("balancer.update_every", update_every, 1)
        self.max_norm = None if max_norm is None else checks.number("balancer.max_norm", max_norm, 0.0, strict_low=True)
        self.tol = checks.number("balancer.tol", tol, 0.0, strict_low=True)
        self.max_iter = checks.integer("balancer.max_iter", max_iter, 1)
        self.ridge = checks.number("balancer.ridge", ridge, 0.0)
        self.step = 0
        self.prev_weights: Optional[Tensor] = None  # float64 weights of the last solve
        self.warm_start: Optional[np.ndarray] = None  # scaled root of the last solve

    def combine(self, G: Tensor, losses: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        direction, w = super().combine(G, losses)
        norm = float(direction.norm())
        if self.max_norm is not None and norm > self.max_norm:
            direction, w = direction * (self.max_norm / norm), w * (self.max_norm / norm)
        return direction, w

    def _weights(self, G: Tensor, losses: Optional[Tensor]) -> Tensor:
        if self.prev_weights is None or self.step % self.update_every == 0:
            self.last_gram = gram_matrix(G)
            solver = partial(newton_power_solve, tol=self.tol, max_iter=self.max_iter)
            w, self.warm_start = solve_power_weights(self.last_gram.numpy(), 1.0, self.ridge, solver, self.warm_start)
            self.prev_weights = torch.from_numpy(w)
        else:
            self.last_gram = None
        self.step += 1
        return self.prev_weights

    def state_dict(self) -> dict[str, Any]:
        clone = lambda x: None if x is None else torch.as_tensor(x).clone()  # noqa: E731
        return {"step": self.step, "prev_weights": clone(self.prev_weights), "warm_start": clone(self.warm_start)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._expect_keys(state, ("step", "prev_weights", "warm_start"))
        self.step = int(state["step"])
        prev, warm = state["prev_weights"], state["warm_start"]
        self.prev_weights = None if prev is None else prev.clone().to(torch.float64)
        self.warm_start = None if warm is None else warm.clone().to(torch.float64).numpy()
