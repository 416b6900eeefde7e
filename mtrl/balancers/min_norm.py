"""The minimum-norm point of the convex hull of vectors, from their Gram matrix only (MGDA, Pareto MTL).

Problem: min_w |sum_i w_i v_i|^2 over the simplex (w >= 0, sum w = 1), given A = (v_i . v_j). Its solution
is the min-norm element of Sener & Koltun (NeurIPS 2018, "Multi-Task Learning as Multi-Objective
Optimization"), whose code (intel-isl/MultiObjectiveOptimization, min_norm_solvers.py; read, not copied)
starts from the best pair and refines by projected gradient / Frank-Wolfe steps to a 1e-5 change in w.
Here it is solved exactly instead, by Wolfe's min-norm-point algorithm (Wolfe 1976, "Finding the nearest
point in a polytope"): an active-set method that keeps a corral S of vertices, moves to the min-norm point
of their affine hull when it lies inside their simplex and otherwise to the boundary, and stops when no
vertex improves (finite termination in exact arithmetic). The two-vertex step is the closed form of that
code's pair solver without its clamping of w to [0.001, 0.999].
"""

from __future__ import annotations

import numpy as np

#: Barycentric weights at or below this count as zero (the vertex leaves the corral).
WEIGHT_TOL = 1e-12


def _affine_min_norm(B: np.ndarray) -> np.ndarray:
    """Weights mu (sum 1) of the min-norm point of the affine hull of vectors with Gram ``B``."""
    n = B.shape[0]
    if n == 1:
        return np.ones(1)
    if n == 2:  # closed form, exact for symmetric cases (e.g. opposite vectors give 1/2, 1/2)
        denom = B[0, 0] + B[1, 1] - 2.0 * B[0, 1]  # |v_0 - v_1|^2
        first = 0.5 if denom <= 0.0 else (B[1, 1] - B[0, 1]) / denom
        return np.array([first, 1.0 - first])
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n], kkt[:n, n], kkt[n, :n] = B, 1.0, 1.0
    rhs = np.zeros(n + 1)
    rhs[n] = 1.0
    mu = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:n]
    return mu / mu.sum()


def min_norm_weights(gram: np.ndarray, *, tol: float = 1e-10, max_iter: int = 1000) -> np.ndarray:
    """Simplex weights w of the min-norm point sum_i w_i v_i of the convex hull of vectors with Gram ``gram``.

    Works on the Gram scaled by its largest diagonal entry; stops when Wolfe's optimality gap
    |x|^2 - min_j x . v_j (an upper bound on |x|^2 - |x*|^2) is at most ``tol`` (relative to max |v_j|^2),
    or after ``max_iter`` corral changes. With every vector zero (or a non-finite Gram) it returns the
    uniform weights, whose point is zero as well. The point is unique; the weights need not be (dependent
    vectors), and any optimal weights are returned.
    """
    n = gram.shape[0]
    uniform = np.full(n, 1.0 / n)
    top = float(np.max(np.diag(gram))) if n else 0.0
    if n == 1 or not np.isfinite(gram).all() or top <= 0.0:
        return uniform
    A = gram / top
    start = int(np.argmin(np.diag(A)))
    corral = [start]
    w = np.zeros(n)
    w[start] = 1.0
    for _ in range(max_iter):
        scores = A @ w  # x . v_j for every vertex j
        norm_sq = float(w @ scores)
        j = int(np.argmin(scores))
        if norm_sq - scores[j] <= tol or j in corral:  # optimal (or no progress is possible numerically)
            break
        corral.append(j)
        while True:  # minor cycle: move toward the affine min-norm point of the corral, dropping vertices
            idx = np.array(corral)
            mu = _affine_min_norm(A[np.ix_(idx, idx)])
            if (mu > WEIGHT_TOL).all():
                w[:] = 0.0
                w[idx] = mu
                break
            current = w[idx]
            out = mu <= WEIGHT_TOL
            step = float(np.min(current[out] / (current[out] - mu[out])))
            current = current + step * (mu - current)
            keep = current > WEIGHT_TOL
            w[:] = 0.0
            w[idx[keep]] = current[keep] / current[keep].sum()
            corral = [int(i) for i in idx[keep]]
    return w
