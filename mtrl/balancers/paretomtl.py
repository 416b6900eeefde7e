"""Pareto MTL (Lin et al., NeurIPS 2019): one Pareto-optimal trade-off per preference vector.

Procedure followed from the paper and the authors' code (Xi-L/ParetoMTL, multiMNIST/train.py:
get_d_paretomtl_init, get_d_paretomtl, circle_points; read, not copied):

- Preference vectors u_1..u_M (``preference_vectors``); subproblem k keeps the loss vector L in the cone
  closer by angle to u_k than to any other u_j: constraints G_j(L) = (u_j - u_k) . L <= 0, j != k.
- Active constraints of the main phase: G_j evaluated on the normalised loss vector L / |L| (as the
  authors; only the sign and the ``eps`` margin depend on it) with G_j > -eps; eps = 0 is the authors'
  code, eps > 0 the paper's epsilon-active set I_eps = {j : G_j >= -eps}. The gradient of constraint j is
  c_j = sum_i (u_j - u_k)_i g_i (the linear constraint on the unnormalised losses, as the authors).
- Feasibility phase (the paper's "find the initial solution"): while the loss vector violates a
  constraint (G_j > 0, whatever eps), the direction is the min-norm point of the hull of the violated
  c_j; the phase ends at the first call whose loss vector is feasible (the authors stop as soon as that
  happens), or after ``init_steps`` calls.
- Main phase: the min-norm point of the hull of {g_i} and the active {c_j} (MGDA's dual of the paper's
  subproblem min_d max(g_i . d, c_j . d) + |d|^2 / 2); with no active constraint it is plain MGDA.
  Task weights are lambda_i + sum_j beta_j (u_j - u_k)_i and may be negative.
- Scale: the authors rescale the main-phase weights to sum |w| = K (a summed loss) and use the
  feasibility weights as they come. Both are divided by K here (sum |w| = 1 in the main phase), the
  mean-loss convention of this package; the relative scale of the two phases is the authors'.
"""

from __future__ import annotations

import math
import numbers
from itertools import combinations_with_replacement
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from mtrl import checks
from mtrl.balancers.base import _BLAS, BalancerError, GradientBalancer, gram_matrix
from mtrl.balancers.min_norm import min_norm_weights

#: Largest accepted number of preference vectors (a sweep has one run per vector).
MAX_PREFERENCES = 1000
#: Two preference vectors closer than this (Euclidean, unit vectors) count as the same one.
SAME_VECTOR = 1e-9


def _lattice(num_tasks: int, divisions: int) -> np.ndarray:
    """Das-Dennis simplex lattice: all a / H with a_i >= 0 integers summing to H, a_1 descending first."""
    rows = []
    for bars in combinations_with_replacement(range(num_tasks), divisions):
        counts = np.bincount(np.array(bars, dtype=int), minlength=num_tasks) if bars else np.zeros(num_tasks)
        rows.append(counts)
    points = np.array(rows, dtype=np.float64)
    order = np.lexsort(-points.T[::-1])  # lexicographic, largest a_1 first, then a_2, ...
    return points[order] / divisions


def _farthest_points(candidates: np.ndarray, count: int) -> np.ndarray:
    """Indices (sorted) of ``count`` unit vectors picked greedily to maximise the smallest angle between them.

    Starts from the candidate closest to the diagonal; ties go to the lowest index (cosines rounded to
    12 digits so that rounding noise cannot break them).
    """
    first = int(np.argmax(np.round(candidates.sum(axis=1), 12)))
    chosen = [first]
    nearest = candidates @ candidates[first]  # cosine to the nearest chosen vector
    for _ in range(count - 1):
        nearest[chosen] = np.inf
        pick = int(np.argmin(np.round(nearest, 12)))
        chosen.append(pick)
        nearest = np.maximum(nearest, candidates @ candidates[pick])
    return np.sort(np.array(chosen))


def preference_vectors(num_tasks: int, num_preferences: int) -> np.ndarray:
    """(M, K) unit preference vectors spread evenly over the positive orthant, deterministic.

    K = 1: the vector (1) M times. K = 2: the authors' ``circle_points``, angles 0, pi/2/(M-1), ..., pi/2
    (index 0 is (1, 0)). K >= 3: the Das-Dennis lattice {a / H : a_i >= 0 integers, sum a = H} with the
    smallest H >= 1 giving at least M points, normalised to unit length, in lexicographic order (largest
    a_1 first). When M is exactly a lattice size, C(H + K - 1, K - 1) (K = 3: 3, 6, 10, 15, ...; K = 10:
    10, 55, 220, ...), that is the whole lattice; otherwise M of its points chosen by farthest-point
    sampling (``_farthest_points``), kept in lattice order.
    """
    k = checks.integer("balancer.num_tasks", num_tasks, 1)
    m = checks.integer("balancer.num_preferences", num_preferences, 1, MAX_PREFERENCES)
    if k == 1:
        return np.ones((m, 1))
    if k == 2:
        angles = np.linspace(0.0, 0.5 * np.pi, m)
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    divisions = 1
    while math.comb(divisions + k - 1, k - 1) < m:
        divisions += 1
    points = _lattice(k, divisions)
    points = points / np.linalg.norm(points, axis=1, keepdims=True)
    return points if len(points) == m else points[_farthest_points(points, m)]


Preference = Union[int, Sequence[float]]


class ParetoMTL(GradientBalancer):
    """Pareto MTL for one preference: the region of preference ``preference`` among ``num_preferences``.

    ``preference`` is an index 0..M-1 into ``preference_vectors(K, M)`` or an explicit list of K
    non-negative numbers (normalised; its competitors are then all M generated vectors except any equal
    to it). Index 0 for K = 2 is u = (1, 0): the loss vector is kept near the task-0 axis, i.e. task 1
    gets the *lower* loss. The method assumes positive task losses (angles of the loss vector);
    ``losses`` must be passed to ``combine``. A loss vector of norm 0 counts as feasible.
    ``init_steps``: most calls of the feasibility phase (0 = none). ``eps``: the main phase's active-set margin.
    ``tol``/``max_iter``: the min-norm solver's (``min_norm.min_norm_weights``).
    K = 1 (no constraints) gives d = g exactly. State: the call counter and whether the feasibility
    phase has ended.
    """

    name = "paretomtl"
    positive_losses = "it keeps the loss vector in cones of the positive orthant"
    default_apply_to = ("critic",)

    def __init__(
        self,
        num_tasks: int,
        *,
        num_preferences: int = 5,
        preference: Preference = 0,
        init_steps: int = 1000,
        eps: float = 0.0,
        tol: float = 1e-10,
        max_iter: int = 1000,
    ) -> None:
        super().__init__(num_tasks)
        self.preferences = preference_vectors(num_tasks, num_preferences)
        self.preference = self._preference_vector(preference)
        others = self.preferences[np.linalg.norm(self.preferences - self.preference, axis=1) > SAME_VECTOR]
        #: (m, K) rows u_j - u_k: constraint j is rows[j] . L <= 0 and its gradient is rows[j] @ G.
        self.constraints = others - self.preference
        self.init_steps = checks.integer("balancer.init_steps", init_steps, 0)
        self.eps = checks.number("balancer.eps", eps, 0.0)
        self.tol = checks.number("balancer.tol", tol, 0.0, strict_low=True)
        self.max_iter = checks.integer("balancer.max_iter", max_iter, 1)
        self.step = 0
        self.init_done = self.init_steps == 0

    def _preference_vector(self, preference: Preference) -> np.ndarray:
        """The unit vector u_k of ``preference`` (index or explicit K-vector); one-line error otherwise."""
        m, k = len(self.preferences), self.num_tasks
        if isinstance(preference, numbers.Integral) and not isinstance(preference, bool):
            return self.preferences[checks.integer("balancer.preference", preference, 0, m - 1)]
        if isinstance(preference, (str, bytes)) or not isinstance(preference, Sequence) or len(preference) != k:
            raise checks.fail(
                "balancer.preference", preference, f"an index 0..{m - 1} or a list of {k} non-negative numbers"
            )
        vector = np.array([checks.number(f"balancer.preference[{i}]", v, 0.0) for i, v in enumerate(preference)])
        if vector.sum() <= 0.0:
            raise checks.fail("balancer.preference", list(preference), "a list with at least one positive entry")
        return vector / np.linalg.norm(vector)

    def constraint_values(self, losses: np.ndarray) -> np.ndarray:
        """G_j = (u_j - u_k) . L / |L| per competitor j; -inf for a zero (or non-finite) loss vector."""
        norm = float(np.linalg.norm(losses))
        if not norm > 0.0:  # nothing to steer
            return np.full(len(self.constraints), -np.inf)
        return self.constraints @ (losses / norm)

    def active_constraints(self, losses: np.ndarray) -> np.ndarray:
        """The main phase's active set: G_j > -eps."""
        return self.constraint_values(losses) > -self.eps

    def _weights(self, G: Tensor, losses: Optional[Tensor]) -> Tensor:
        if losses is None:
            raise BalancerError("paretomtl needs the task losses: combine(G, losses)")
        values = self.constraint_values(self._check_losses(losses).numpy())
        violated = values > 0.0
        if not self.init_done and (self.step >= self.init_steps or not violated.any()):
            self.init_done = True  # feasible (or out of feasibility steps): the main phase from now on
        self.step += 1
        rows = self.constraints[values > -self.eps if self.init_done else violated]
        # The vectors of the min-norm problem as combinations of task gradients: P @ G.
        P = rows if not self.init_done else np.vstack([np.eye(self.num_tasks), rows])
        self.last_gram = gram_matrix(G)
        with _BLAS.limit(limits=1, user_api="blas"):
            lam = min_norm_weights(P @ self.last_gram.numpy() @ P.T, tol=self.tol, max_iter=self.max_iter)
            w = P.T @ lam
        if self.init_done:
            total = float(np.abs(w).sum())
            w = w / total if total > 0.0 else w
        else:
            w = w / self.num_tasks
        return torch.from_numpy(w)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "init_done": self.init_done}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._expect_keys(state, ("step", "init_done"))
        self.step = int(state["step"])
        self.init_done = bool(state["init_done"])
