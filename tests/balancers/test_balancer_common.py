"""Properties shared by every balancer: K=1, mean convention, degenerate inputs, dtypes, state round-trip."""

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mtrl.balancers as B

GRADIENT = ["cagrad", "fairgrad", "nashmtl", "pcgrad"]
ALL = sorted(B.available())
VARIANTS = [
    ("cagrad", {}),
    ("cagrad", {"rescale": False}),
    ("cagrad", {"c": 0.0}),
    ("fairgrad", {}),
    ("fairgrad", {"solver": "newton"}),
    ("fairgrad", {"alpha": 1.0}),
    ("nashmtl", {}),
    ("pcgrad", {}),
    ("pcgrad", {"reduction": "sum"}),
    ("pcgrad", {"variant": "mtrl"}),
    ("cagrad", {"variant": "mtrl"}),
    ("cagrad", {"variant": "mtrl", "c": 0.0}),
    ("fairgrad", {"variant": "mtrl"}),
    ("famo", {}),
    ("famo", {"variant": "mtrl"}),
    ("igb", {}),
    ("uniform", {}),
    ("mgda", {}),
    ("mgda", {"normalization": "l2"}),
    ("paretomtl", {"init_steps": 1}),
]
#: (name, options) whose K = 1 direction is exactly the plain gradient; the others give a positive multiple.
EXACT_K1 = {
    ("cagrad", '{"c": 0.0}'),
    ("pcgrad", "{}"),
    ("pcgrad", '{"reduction": "sum"}'),
    ("pcgrad", '{"variant": "mtrl"}'),
    ("cagrad", '{"variant": "mtrl", "c": 0.0}'),
    ("famo", "{}"),
    ("uniform", "{}"),
    ("mgda", "{}"),
    ("paretomtl", '{"init_steps": 1}'),
}


def direction(bal, G, losses=None):
    """The update direction of any balancer (loss methods use their convenience combine)."""
    return bal.combine(G, torch.rand(G.shape[0], dtype=G.dtype) + 0.5 if losses is None else losses)


def key(name, opts):
    import json

    return (name, json.dumps(opts))


@pytest.mark.parametrize("name, opts", VARIANTS)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), dim=st.integers(1, 7))
def test_single_task_reduces_to_the_plain_gradient(name, opts, seed, dim):
    g = torch.randn(1, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if g.norm() < 1e-3:
        return
    d, _ = direction(B.make(name, num_tasks=1, **opts), g, torch.tensor([0.7], dtype=torch.float64))
    scale = float(d @ g[0]) / float(g[0] @ g[0])
    assert scale > 0
    torch.testing.assert_close(d, scale * g[0], rtol=1e-9, atol=1e-12)
    if key(name, opts) in EXACT_K1:
        torch.testing.assert_close(d, g[0], rtol=1e-12, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 6))
def test_uniform_direction_is_the_mean_gradient_and_weights_give_directions(seed, k):
    G = torch.randn(k, 9, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    d, w = B.make("uniform", num_tasks=k).combine(G, torch.rand(k, dtype=torch.float64))
    torch.testing.assert_close(d, G.mean(0))
    for name in GRADIENT:
        d, w = B.make(name, num_tasks=k).combine(G)
        torch.testing.assert_close(d, w @ G)


def degenerate_cases():
    g = torch.tensor([1.0, 2.0, -0.5, 0.25])
    e = torch.tensor([0.0, 0.0, 0.0, 1.0])
    return {
        "all_zero": torch.zeros(3, 4),
        "one_zero": torch.stack([g, torch.zeros(4), e - g]),
        "opposite": torch.stack([g, -g]),
        "opposite_and_same": torch.stack([g, -g, 2 * g]),
        "identical": torch.stack([g, g, g]),
        "k_greater_than_d": torch.randn(7, 2, generator=torch.Generator().manual_seed(0)),
        "tiny": 1e-20 * torch.randn(3, 4, generator=torch.Generator().manual_seed(1)),
        "huge": 1e15 * torch.randn(3, 4, generator=torch.Generator().manual_seed(2)),
        "mixed_scales": torch.stack([1e-12 * g, g, -1e6 * g + e]),
    }


@pytest.mark.parametrize("case", sorted(degenerate_cases()))
@pytest.mark.parametrize("name, opts", VARIANTS)
def test_degenerate_inputs_give_finite_output(name, opts, case):
    G = degenerate_cases()[case]
    losses = torch.tensor([0.0, 1e-30, 2.0, -1.0, 5.0, 1e6, 3.0][: G.shape[0]])
    bal = B.make(name, num_tasks=G.shape[0], **opts)
    for _ in range(2):
        d, w = direction(bal, G, losses)
        assert torch.isfinite(d).all() and torch.isfinite(w).all()
        bal.update(losses, losses * 0.5)
    if case in ("all_zero", "opposite") and bal.kind == "gradient":
        assert torch.equal(d, torch.zeros_like(d))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_dtype_follows_input(name, dtype):
    G = torch.randn(3, 5, dtype=dtype)
    d, w = direction(B.make(name, num_tasks=3), G)
    assert d.dtype == dtype and w.dtype == dtype and d.shape == (5,) and w.shape == (3,)


STATEFUL = [
    ("pcgrad", {"seed": 3}),
    ("pcgrad", {}),
    ("nashmtl", {"update_every": 3}),
    ("famo", {}),
    ("igb", {"base_step": 3}),
    ("cagrad", {}),
    ("fairgrad", {}),
    ("uniform", {}),
    ("paretomtl", {"init_steps": 3}),
]


def step(bal, G, losses):
    """One training-like step: direction, then the post-step update with lower losses."""
    d, w = direction(bal, G, losses)
    bal.update(losses, losses * 0.9)
    return d, w


@pytest.mark.parametrize("name, opts", STATEFUL)
def test_state_dict_round_trip_reproduces_the_next_outputs(name, opts):
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(5, 8, generator=gen, dtype=torch.float64), torch.rand(5, generator=gen, dtype=torch.float64) + 0.1)
        for _ in range(8)
    ]
    bal = B.make(name, num_tasks=5, **opts)
    for G, losses in batches[:4]:
        step(bal, G, losses)
    buffer = io.BytesIO()
    torch.save(bal.state_dict(), buffer)  # through a checkpoint file, as a resumed run would
    expected = [step(bal, G, losses) for G, losses in batches[4:]]
    buffer.seek(0)
    restored = B.make(name, num_tasks=5, **{**opts, "seed": 99} if name == "pcgrad" else opts)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    for (G, losses), (d, w) in zip(batches[4:], expected):
        d2, w2 = step(restored, G, losses)
        assert torch.equal(d, d2) and torch.equal(w, w2)
