"""variant=mtrl of pcgrad, cagrad, fairgrad and famo: each against a plain reference loop of the authors' procedure.

The references are written the slow, obvious way (explicit per-task loops; torch autograd with
torch.optim.SGD / Adam and clip_grad_norm_), independently of the balancers' Gram-matrix and
analytic-gradient implementations.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mtrl.balancers as B
from mtrl.config.parse import parse_train
from mtrl.errors import UserError
from tests.conftest import compose_config


def gradients(seed, k, dim, scale=1.0, dtype=torch.float64):
    """Random G with different row norms and a shared component (some conflicts, some agreement)."""
    gen = torch.Generator().manual_seed(seed)
    norms = torch.rand(k, 1, generator=gen, dtype=torch.float64) * 3 + 0.1
    G = norms * (
        torch.randn(k, dim, generator=gen, dtype=torch.float64)
        + 0.5 * torch.randn(1, dim, generator=gen, dtype=torch.float64)
    )
    return (scale * G).to(dtype)


# ----------------------------------------------------------------------------- PCGrad
def reference_pcgrad(G, orders):
    """facebookresearch/mtrl's PCGrad, one task at a time: project onto normalised original gradients, average."""
    units = [g / (g.norm() + 1e-8) for g in G]
    projected = []
    for i in range(G.shape[0]):
        g = G[i].clone()
        for j in orders[i]:
            g = g - min(float(g @ units[j]), 0.0) * units[j]
        projected.append(g)
    return torch.stack(projected).mean(0)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(1, 7),
    dim=st.integers(1, 6),
    scale=st.sampled_from([1e-6, 1.0, 1e4]),
    zero_row=st.booleans(),
)
def test_pcgrad_mtrl_matches_the_per_task_loop_for_its_drawn_orders(seed, k, dim, scale, zero_row):
    G = gradients(seed, k, dim, scale)
    if zero_row:
        G[0] = 0.0
    bal = B.make("pcgrad", num_tasks=k, seed=seed % 1000, variant="mtrl")
    state = bal.generator.get_state()
    orders = bal.draw_orders(k)
    for i, row in enumerate(orders):  # each task visits every other task exactly once
        assert sorted(row.tolist()) == [j for j in range(k) if j != i]
    bal.generator.set_state(state)
    d, w = bal.combine(G)
    expected = reference_pcgrad(G, orders)
    atol = 1e-12 * float(G.norm(dim=1).max())
    torch.testing.assert_close(d, expected, rtol=1e-9, atol=atol)
    torch.testing.assert_close(d, w @ G, rtol=1e-9, atol=atol)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 6))
def test_pcgrad_mtrl_without_conflict_is_the_mean(seed, k):
    G = gradients(seed, k, 5).abs()  # non-negative entries: no pair conflicts
    d, w = B.make("pcgrad", num_tasks=k, seed=1, variant="mtrl").combine(G)
    torch.testing.assert_close(d, G.mean(0))
    torch.testing.assert_close(w, torch.full((k,), 1.0 / k, dtype=torch.float64))


def test_pcgrad_mtrl_seed_reproduces_and_state_round_trips():
    Gs = [gradients(s, 6, 4) for s in range(6)]
    first, second = (B.make("pcgrad", num_tasks=6, seed=5, variant="mtrl") for _ in range(2))
    for G in Gs[:3]:
        assert torch.equal(first.combine(G)[0], second.combine(G)[0])
    restored = B.make("pcgrad", num_tasks=6, seed=9, variant="mtrl")
    restored.load_state_dict(first.state_dict())
    for G in Gs[3:]:
        assert torch.equal(first.combine(G)[0], restored.combine(G)[0])


# ----------------------------------------------------------------------------- CAGrad
def reference_cagrad(G, c):
    """Cranial-XIX/CAGrad mtrl_files/cagrad.py: 20 autograd SGD steps on softmax logits, best of 21 iterates."""
    k = G.shape[0]
    GG = G @ G.T
    scale = (GG.diagonal() + 1e-4).sqrt().mean()
    A = GG / scale**2
    b = A.mean(1)
    c_prime = c * (b.mean() + 1e-4).sqrt()
    v = torch.zeros(k, dtype=G.dtype, requires_grad=True)
    opt = torch.optim.SGD([v], lr=50.0 if k == 50 else 25.0, momentum=0.5)
    best, v_best = math.inf, None
    for step in range(21):
        opt.zero_grad()
        w = torch.softmax(v, 0)
        objective = w @ b + c_prime * (w @ A @ w + 1e-4).sqrt()
        if objective.item() < best:
            best, v_best = objective.item(), v.detach().clone()
        if step < 20:
            objective.backward()
            opt.step()
    w = torch.softmax(v_best, 0)
    lam = c_prime / ((w @ A @ w + 1e-4).sqrt() + 1e-4)
    direction = sum((1.0 / k + lam * w[i]) * G[i] for i in range(k)) / (1 + c**2)
    return direction, w


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(1, 8),
    dim=st.integers(1, 12),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    c=st.floats(0.0, 2.0),
)
def test_cagrad_mtrl_matches_the_autograd_sgd_loop(seed, k, dim, scale, c):
    G = gradients(seed, k, dim, scale)
    bal = B.make("cagrad", num_tasks=k, c=c, variant="mtrl")
    d, weights = bal.combine(G)
    expected, w_expected = reference_cagrad(G, c)
    # lr 25 makes the SGD path sensitive to rounding; in float64 it stays within ~1e-8 of the reference
    torch.testing.assert_close(d, expected, rtol=1e-6, atol=1e-6 * float(expected.norm()))
    torch.testing.assert_close(bal.simplex_weights, w_expected, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(d, weights @ G)


def test_cagrad_mtrl_uses_the_k50_learning_rate():
    G = gradients(3, 50, 60)
    expected, _ = reference_cagrad(G, 0.5)
    d, _ = B.make("cagrad", num_tasks=50, c=0.5, variant="mtrl").combine(G)
    torch.testing.assert_close(d, expected, rtol=1e-6, atol=1e-6 * float(expected.norm()))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 6))
def test_cagrad_mtrl_with_c_zero_is_the_mean_gradient(seed, k):
    G = gradients(seed, k, 5)
    d, w = B.make("cagrad", num_tasks=k, c=0.0, variant="mtrl").combine(G)
    torch.testing.assert_close(d, G.mean(0))
    torch.testing.assert_close(w, torch.full((k,), 1.0 / k, dtype=torch.float64))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), c=st.floats(0.0, 2.0), scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_cagrad_mtrl_single_task_is_the_documented_multiple(seed, c, scale):
    g = gradients(seed, 1, 4, scale)
    d, _ = B.make("cagrad", num_tasks=1, c=c, variant="mtrl").combine(g)
    r = float(g[0] @ g[0]) / (float(g[0] @ g[0]) + 1e-4)
    lam = c * math.sqrt(r + 1e-4) / (math.sqrt(r + 1e-4) + 1e-4)
    torch.testing.assert_close(d, (1 + lam) / (1 + c**2) * g[0])


def test_cagrad_mtrl_runs_in_the_dtype_of_g():
    G = gradients(7, 4, 9, dtype=torch.float32)
    bal = B.make("cagrad", num_tasks=4, c=0.9, variant="mtrl")
    d, w = bal.combine(G)
    assert d.dtype == w.dtype == bal.simplex_weights.dtype == torch.float32
    assert torch.equal(w, bal.mtrl_coefficients((G @ G.T).cpu()))  # the float32 Gram, float32 maths
    expected, _ = reference_cagrad(G, 0.9)
    torch.testing.assert_close(d, expected, rtol=1e-4, atol=1e-4 * float(expected.norm()))


# ----------------------------------------------------------------------------- FairGrad
def reference_fairgrad(G, alpha):
    """OptMN-Lab/fairgrad mtrl_files/fairgrad.py: 20 autograd SGD steps with clipping, best pre-step iterate."""
    k = G.shape[0]
    GG = G @ G.T
    w = (torch.ones(k, dtype=G.dtype) / k).requires_grad_(True)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.5)
    best, w_best = math.inf, None
    for _ in range(20):
        opt.zero_grad()
        objective = torch.linalg.norm(GG @ w - (1 / (w + 1e-8)) ** (1 / alpha)) ** 2
        if objective.item() < best:
            best, w_best = objective.item(), w.detach().clone()
        objective.backward()
        torch.nn.utils.clip_grad_norm_(w, max_norm=1.0)
        opt.step()
        with torch.no_grad():
            w.clamp_(min=1e-8)
    return sum(w_best[i] * G[i] for i in range(k)), w_best


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(1, 8),
    dim=st.integers(1, 12),
    scale=st.sampled_from([1e-3, 1.0, 30.0]),
    alpha=st.floats(0.3, 8.0),
)
def test_fairgrad_mtrl_matches_the_autograd_sgd_loop(seed, k, dim, scale, alpha):
    G = gradients(seed, k, dim, scale)
    d, w = B.make("fairgrad", num_tasks=k, alpha=alpha, variant="mtrl").combine(G)
    expected, w_expected = reference_fairgrad(G, alpha)
    torch.testing.assert_close(w, w_expected, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(d, expected, rtol=1e-8, atol=1e-10 * float(expected.norm()))
    assert (w >= 1e-8).all()
    torch.testing.assert_close(d, w @ G)


def test_fairgrad_mtrl_runs_in_the_dtype_of_g():
    G = gradients(2, 5, 8, dtype=torch.float32)
    bal = B.make("fairgrad", num_tasks=5, variant="mtrl")
    d, w = bal.combine(G)
    assert d.dtype == w.dtype == torch.float32
    assert torch.equal(w, bal.mtrl_weights((G @ G.T).cpu()))
    expected, _ = reference_fairgrad(G, 2.0)  # float32 rounding differs from autograd's: ~3e-6 here
    torch.testing.assert_close(d, expected, rtol=1e-4, atol=1e-4 * float(expected.norm()))


# ----------------------------------------------------------------------------- FAMO
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 8), variant=st.sampled_from(["mtrl", "authors"]))
def test_famo_mtrl_coefficients_multiply_by_c(seed, k, variant):
    gen = torch.Generator().manual_seed(seed)
    bal = B.make("famo", num_tasks=k, variant=variant)
    assert bal.variant == "mtrl"
    bal.logits = torch.randn(k, generator=gen, dtype=torch.float64)
    losses = torch.rand(k, generator=gen, dtype=torch.float64) * 3
    z = torch.softmax(bal.logits, 0)
    c = sum(float(z[j]) / (float(losses[j]) + 1e-8) for j in range(k))
    expected = torch.tensor([float(z[i]) * c / (float(losses[i]) + 1e-8) for i in range(k)], dtype=torch.float64)
    torch.testing.assert_close(bal.weights(losses), expected, rtol=1e-12, atol=0)


def test_famo_mtrl_follows_the_authors_critic_update_over_a_loss_sequence():
    """Reference: Cranial-XIX/FAMO mtrl_files/famo.py's update_critic, with autograd and torch.optim.Adam."""
    k, lr, gamma = 5, 0.025, 0.01
    bal = B.make("famo", num_tasks=k, lr=lr, gamma=gamma, variant="mtrl")
    logits = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    adam = torch.optim.Adam([logits], lr=lr, weight_decay=gamma)
    gen = torch.Generator().manual_seed(0)
    losses = torch.tensor([1.0, 2.0, 0.5, 3.0, 0.05], dtype=torch.float64)
    rates = torch.tensor([0.99, 0.9, 0.999, 0.95, 0.97], dtype=torch.float64)
    for _ in range(30):
        task_loss = losses.clone().requires_grad_(True)
        z = torch.softmax(logits, 0).detach()
        c = (z / (task_loss + 1e-8)).sum().detach()
        (z * (task_loss + 1e-8).log() * c).sum().backward()  # the loss the authors backpropagate
        torch.testing.assert_close(bal.weights(losses), task_loss.grad, rtol=1e-12, atol=0)
        after = losses * rates * (1 + 0.01 * torch.rand(k, generator=gen, dtype=torch.float64))
        delta = (losses + 1e-8).log() - (after + 1e-8).log()
        adam.zero_grad()
        logits.grad = torch.autograd.grad(torch.softmax(logits, 0), logits, grad_outputs=delta)[0]
        adam.step()
        bal.update(losses, after)
        torch.testing.assert_close(bal.logits, logits.detach(), rtol=1e-10, atol=1e-12)
        losses = after


# ----------------------------------------------------------------------------- configuration
def configured(*overrides):
    """The balancer a training run builds from these command-line overrides (Hydra compose, parse, make)."""
    config = parse_train(compose_config("train", list(overrides))).balancer
    return B.make(config.name, 3, **config.options)


@pytest.mark.parametrize(
    "name, extra", [("pcgrad", []), ("cagrad", ["balancer.c=0.9"]), ("fairgrad", []), ("famo", [])]
)
def test_variant_is_selected_from_the_command_line(name, extra):
    bal = configured(f"balancer={name}", "balancer.variant=mtrl", *extra)
    assert bal.name == name and bal.variant == "mtrl"
    if name == "cagrad":
        assert bal.c == 0.9
    assert configured(f"balancer={name}").variant == "paper"


@pytest.mark.parametrize("name", ["pcgrad", "cagrad", "fairgrad", "famo"])
def test_bad_variant_from_the_command_line_is_one_line(name):
    with pytest.raises(UserError) as info:
        configured(f"balancer={name}", "balancer.variant=exact")
    assert "\n" not in str(info.value)
    assert "balancer.variant='exact' is not allowed" in str(info.value) and "paper, mtrl" in str(info.value)
