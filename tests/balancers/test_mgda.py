"""MGDA and the min-norm solver: the exact min-norm point of the hull, a common descent direction, edge cases."""

from itertools import combinations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mtrl.balancers as B
from mtrl.balancers.min_norm import min_norm_weights
from mtrl.errors import UserError


def rand(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def brute_force_min_norm(G: torch.Tensor) -> torch.Tensor:
    """The min-norm point of conv{g_i} by exact enumeration: the affine min-norm point of every face, if inside it."""
    k = G.shape[0]
    best = None
    for size in range(1, k + 1):
        for face in combinations(range(k), size):
            V = G[list(face)]
            gram = (V @ V.T).numpy()
            kkt = np.block([[gram, np.ones((size, 1))], [np.ones((1, size)), np.zeros((1, 1))]])
            mu = np.linalg.lstsq(kkt, np.append(np.zeros(size), 1.0), rcond=None)[0][:size]
            if (mu >= -1e-12).all():
                point = torch.from_numpy(mu) @ V
                if best is None or point.norm() < best.norm():
                    best = point
    return best


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 5), dim=st.integers(1, 6))
def test_direction_is_the_min_norm_point_of_the_hull(seed, k, dim):
    G = rand(seed, k, dim)
    d, w = B.make("mgda", num_tasks=k).combine(G)
    scale = float(G.norm(dim=1).max())
    expected = brute_force_min_norm(G)
    torch.testing.assert_close(d, expected, rtol=0, atol=1e-6 * scale)
    assert (w >= 0).all() and abs(float(w.sum()) - 1.0) < 1e-12
    torch.testing.assert_close(d, w @ G)
    # optimality of the min-norm point: g_i . d >= |d|^2 for every task, so -d descends on every task
    assert float((G @ d).min()) >= float(d @ d) - 1e-8 * scale**2
    assert float((G @ d).min()) >= -1e-12 * scale**2


def test_min_norm_on_a_fine_simplex_grid_for_three_tasks():
    """K = 3: the solver's squared norm is the minimum over a 1/300 grid of the simplex (up to grid error)."""
    G = torch.tensor([[1.0, 0.2, 0.0], [-0.6, 1.0, 0.3], [0.1, -0.8, 1.0]], dtype=torch.float64)
    steps = 300
    a, b = np.meshgrid(np.arange(steps + 1), np.arange(steps + 1), indexing="ij")
    keep = a + b <= steps
    W = np.stack([a[keep], b[keep], steps - a[keep] - b[keep]], axis=1) / steps
    grid_best = float(np.min(np.sum((W @ G.numpy()) ** 2, axis=1)))
    d, _ = B.make("mgda", num_tasks=3).combine(G)
    assert float(d @ d) <= grid_best + 1e-12
    assert float(d @ d) >= grid_best - 1e-3


@pytest.mark.parametrize(
    "G, expected",
    [
        ([[1.0, 0.0], [0.0, 1.0]], [0.5, 0.5]),  # orthogonal unit vectors: the midpoint
        ([[1.0, 0.0], [1.0, 1.0]], [1.0, 0.0]),  # g1 . g2 = |g1|^2: the vertex g1
        ([[2.0, 0.0], [-1.0, 0.0]], [0.0, 0.0]),  # opposite: 0 lies on the segment
        ([[1.0, 0.0], [-1.0, 1.0], [-1.0, -1.0]], [0.0, 0.0]),  # 0 inside the triangle
        ([[3.0, 4.0], [3.0, 4.0]], [3.0, 4.0]),  # identical gradients: d = g
    ],
)
def test_hand_built_cases(G, expected):
    G = torch.tensor(G, dtype=torch.float64)
    d, _ = B.make("mgda", num_tasks=G.shape[0]).combine(G)
    torch.testing.assert_close(d, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_single_task_and_degenerate_inputs():
    g = torch.tensor([[1.0, -2.0, 0.5]])
    d, w = B.make("mgda", num_tasks=1).combine(g)
    assert torch.equal(d, g[0]) and torch.equal(w, torch.ones(1))
    for G in (
        torch.zeros(3, 4),
        torch.stack([torch.ones(4), -torch.ones(4)]),
        1e-20 * torch.randn(3, 4),
        1e15 * torch.randn(3, 4),
        torch.randn(7, 2),
    ):
        d, w = B.make("mgda", num_tasks=G.shape[0]).combine(G)
        assert torch.isfinite(d).all() and torch.isfinite(w).all()
    d, _ = B.make("mgda", num_tasks=2).combine(torch.stack([torch.ones(4), -torch.ones(4)]))
    assert torch.equal(d, torch.zeros(4))


def test_solver_weights_for_a_zero_or_non_finite_gram_are_uniform():
    np.testing.assert_array_equal(min_norm_weights(np.zeros((3, 3))), np.full(3, 1 / 3))
    np.testing.assert_array_equal(min_norm_weights(np.full((2, 2), np.nan)), np.full(2, 0.5))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 5))
def test_l2_normalization_solves_on_unit_gradients_and_weights_the_raw_ones(seed, k):
    G = rand(seed, k, 6) * torch.linspace(0.1, 10.0, k, dtype=torch.float64)[:, None]
    d, w = B.make("mgda", num_tasks=k, normalization="l2").combine(G)
    unit = G / G.norm(dim=1, keepdim=True)
    _, w_unit = B.make("mgda", num_tasks=k).combine(unit)
    torch.testing.assert_close(w, w_unit, rtol=0, atol=1e-9)
    torch.testing.assert_close(d, w @ G)
    losses = torch.rand(k, dtype=torch.float64) + 0.5
    _, w_loss = B.make("mgda", num_tasks=k, normalization="loss").combine(G, losses)
    _, w_ref = B.make("mgda", num_tasks=k).combine(G / losses[:, None])
    torch.testing.assert_close(w_loss, w_ref, rtol=0, atol=1e-9)


def test_bad_options_and_missing_losses_are_one_line_errors():
    with pytest.raises(UserError, match=r"balancer.normalization='l1' is not allowed; expected one of none, l2"):
        B.make("mgda", num_tasks=2, normalization="l1")
    with pytest.raises(UserError, match="balancer.tol=0.0 is not allowed"):
        B.make("mgda", num_tasks=2, tol=0.0)
    with pytest.raises(UserError, match="needs the task losses"):
        B.make("mgda", num_tasks=2, normalization="loss+").combine(torch.randn(2, 3))


def test_float32_input_gives_float32_output():
    d, w = B.make("mgda", num_tasks=3).combine(torch.randn(3, 5))
    assert d.dtype == torch.float32 and w.dtype == torch.float32
