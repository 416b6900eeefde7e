"""CAGrad: the direction stays in the c-ball around g0 and maximises the worst task improvement."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mtrl.balancers as B


def rand(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def brute_force_best(G, c, samples=60_000, seed=0):
    """max over a dense sample of the ball |d - g0| <= c|g0| of min_i g_i . d (grid in 2-D)."""
    g0 = G.mean(0)
    radius = c * float(g0.norm())
    dim = G.shape[1]
    if dim == 2:
        r = torch.linspace(0, 1, 300, dtype=torch.float64).sqrt()
        theta = torch.linspace(0, 2 * math.pi, 720, dtype=torch.float64)
        points = torch.stack([torch.outer(r, theta.cos()).flatten(), torch.outer(r, theta.sin()).flatten()], 1)
    else:
        gen = torch.Generator().manual_seed(seed)
        u = torch.randn(samples, dim, generator=gen, dtype=torch.float64)
        u = u / u.norm(dim=1, keepdim=True)
        points = u * torch.rand(samples, 1, generator=gen, dtype=torch.float64) ** (1.0 / dim)
        points = torch.cat([points, u])  # the boundary too, where the optimum usually lies
    candidates = g0 + radius * points
    return float((candidates @ G.T).min(dim=1).values.max())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.sampled_from([2, 3]), dim=st.sampled_from([2, 3]), c=st.floats(0.05, 1.5))
def test_direction_is_in_the_ball_and_beats_brute_force(seed, k, dim, c):
    G = rand(seed, k, dim)
    d, w = B.make("cagrad", num_tasks=k, c=c, rescale=False).combine(G)
    g0 = G.mean(0)
    scale = float(G.norm(dim=1).max()) ** 2
    assert float((d - g0).norm()) <= c * float(g0.norm()) * (1 + 1e-6) + 1e-9
    ours = float((G @ d).min())
    assert ours >= brute_force_best(G, c) - 1e-6 * scale


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 8), c=st.floats(0.05, 2.0))
def test_primal_value_equals_the_dual_value(seed, k, c):
    """Strong duality: min_i g_i.d* = min_w g_w.g0 + c|g0||g_w|, to the solver's accuracy; rescale divides by 1+c^2."""
    G = rand(seed, k, 12)
    bal = B.make("cagrad", num_tasks=k, c=c, rescale=False)
    d, w = bal.combine(G)
    gram = (G @ G.T).numpy()
    dual = bal.dual_weights(gram)
    g0, gw = G.mean(0), torch.from_numpy(dual) @ G
    dual_value = float(gw @ g0 + c * g0.norm() * gw.norm())
    assert abs(float((G @ d).min()) - dual_value) <= 1e-5 * float(gram.diagonal().max())
    d_rescaled, _ = B.make("cagrad", num_tasks=k, c=c).combine(G)
    torch.testing.assert_close(d_rescaled, d / (1 + c**2))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 6))
def test_c_zero_gives_the_mean_gradient(seed, k):
    G = rand(seed, k, 5)
    for rescale in (True, False):
        d, w = B.make("cagrad", num_tasks=k, c=0.0, rescale=rescale).combine(G)
        torch.testing.assert_close(d, G.mean(0))
