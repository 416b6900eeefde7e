"""FairGrad and Nash-MTL: the weights solve (G G^T) w = w^(-1/alpha) (Nash: alpha = 1)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mtrl.balancers as B


def well_conditioned(seed, k, dim=None):
    """Random G with K <= D rows plus a shared component (some conflicts, some agreement)."""
    gen = torch.Generator().manual_seed(seed)
    dim = dim or k + 4
    scales = torch.rand(k, 1, generator=gen, dtype=torch.float64) * 3 + 0.2  # different gradient norms
    return scales * (
        torch.randn(k, dim, generator=gen, dtype=torch.float64)
        + 0.5 * torch.randn(1, dim, generator=gen, dtype=torch.float64)
    )


def relative_residual(G, w, p):
    """max_i |(G G^T w)_i - w_i^-p| / w_i^-p."""
    w = w.numpy()
    return float(np.max(np.abs((G @ G.T).numpy() @ w - w**-p) / w**-p))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(2, 8),
    alpha=st.floats(0.3, 8.0),
    solver=st.sampled_from(["least_squares", "newton"]),
)
def test_fairgrad_weights_solve_the_alpha_fair_system(seed, k, alpha, solver):
    G = well_conditioned(seed, k)
    d, w = B.make("fairgrad", num_tasks=k, alpha=alpha, solver=solver).combine(G)
    assert (w > 0).all()
    assert relative_residual(G, w, 1.0 / alpha) <= 1e-6
    torch.testing.assert_close(d, w @ G)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 8))
def test_nashmtl_weights_solve_the_bargaining_system(seed, k):
    G = well_conditioned(seed, k)
    d, w = B.make("nashmtl", num_tasks=k).combine(G)
    assert (w > 0).all()
    assert relative_residual(G, w, 1.0) <= 1e-6
    torch.testing.assert_close(G @ d, 1.0 / w, rtol=1e-6, atol=0)  # g_i . d = 1 / w_i


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 8))
def test_fairgrad_alpha_one_matches_nashmtl(seed, k):
    G = well_conditioned(seed, k)
    _, w_fair = B.make("fairgrad", num_tasks=k, alpha=1.0).combine(G)  # least squares
    _, w_nash = B.make("nashmtl", num_tasks=k).combine(G)  # Newton on the convex potential
    torch.testing.assert_close(w_fair, w_nash, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "name, opts, power", [("nashmtl", {}, 0.0), ("fairgrad", {"alpha": 1.0}, 0.0), ("fairgrad", {"alpha": 3.0}, -0.5)]
)
def test_scaling_law_of_the_direction(name, opts, power):
    """Scaling G by s scales d by s^((1 - alpha) / (1 + alpha)): Nash-MTL's d is scale-free."""
    G = well_conditioned(5, 4)
    d1, _ = B.make(name, num_tasks=4, **opts).combine(G)
    d2, _ = B.make(name, num_tasks=4, **opts).combine(10.0 * G)
    torch.testing.assert_close(d2, 10.0**power * d1, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["fairgrad", "nashmtl"])
def test_zero_gradient_task_gets_zero_weight_and_others_solve_their_system(name):
    G = well_conditioned(1, 4)
    G[2] = 0.0
    d, w = B.make(name, num_tasks=4).combine(G)
    assert w[2] == 0
    keep = [0, 1, 3]
    p = 0.5 if name == "fairgrad" else 1.0
    assert relative_residual(G[keep], w[keep], p) <= 1e-6


def test_nashmtl_update_every_reuses_weights_between_solves():
    bal = B.make("nashmtl", num_tasks=3, update_every=3)
    Gs = [well_conditioned(s, 3) for s in range(5)]
    ws = [bal.combine(G)[1] for G in Gs]
    assert torch.equal(ws[0], ws[1]) and torch.equal(ws[0], ws[2])
    assert not torch.equal(ws[2], ws[3]) and torch.equal(ws[3], ws[4])
    assert relative_residual(Gs[3], ws[3], 1.0) <= 1e-6
    assert bal.last_gram is None  # non-solving calls skip the Gram product


def test_nashmtl_max_norm_clips_direction_and_weights_together():
    G = 5.0 * well_conditioned(2, 4)
    d_free, _ = B.make("nashmtl", num_tasks=4).combine(G)
    d, w = B.make("nashmtl", num_tasks=4, max_norm=0.1).combine(G)
    assert float(d_free.norm()) > 0.1
    torch.testing.assert_close(d.norm(), torch.tensor(0.1, dtype=torch.float64))
    torch.testing.assert_close(d, w @ G)
    torch.testing.assert_close(d, d_free * (0.1 / d_free.norm()))


def test_warm_start_gives_the_same_solution():
    G1, G2 = well_conditioned(3, 6), well_conditioned(4, 6)
    warm = B.make("nashmtl", num_tasks=6)
    warm.combine(G1)
    _, w_warm = warm.combine(G2)
    _, w_cold = B.make("nashmtl", num_tasks=6).combine(G2)
    torch.testing.assert_close(w_warm, w_cold, rtol=1e-8, atol=0)
