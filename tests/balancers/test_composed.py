"""Loss weighting composed with a gradient method: rows of G scaled by K c, weights multiplied through."""

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mtrl.balancers as B
from mtrl.agents import SACAgent, SACConfig
from mtrl.balancers.objective import BalancedObjective
from mtrl.errors import UserError
from mtrl.train.replay import MultiTaskReplay

GRADIENT = [name for name in B.available() if B.make(name, 2).kind == "gradient"]
LOSS = [name for name in B.available() if B.make(name, 2).kind == "loss"]
#: Small options for the loss methods whose defaults wait many calls before they act.
LOSS_OPTIONS = {
    "igb": {"base_step": 1},
    "igbv2": {
        "seed": 0,
        "base_step": 1,
        "random_steps": 2,
        "update_after": 2,
        "update_every": 2,
        "batch_size": 4,
        "hidden": [8, 8],
    },
}


def rand(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def make(gradient, loss, k, **gradient_opts):
    return B.make(gradient, k, loss_weighting=loss, loss_weighting_options=LOSS_OPTIONS.get(loss, {}), **gradient_opts)


def seeded(name):
    return {"seed": 0} if name == "pcgrad" else {}


@pytest.mark.parametrize("gradient", GRADIENT)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 6))
def test_uniform_loss_weights_leave_the_gradient_method_unchanged(gradient, seed, k):
    composed, alone = make(gradient, "uniform", k, **seeded(gradient)), B.make(gradient, k, **seeded(gradient))
    assert isinstance(composed, B.Composed) and composed.kind == "gradient"
    for step in range(3):
        G, losses = rand(seed + step, k, 9), rand(seed - step, k).abs() + 0.1
        d, w = composed.combine(G, losses)
        d0, w0 = alone.combine(G, losses)
        torch.testing.assert_close(d, d0, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(w, w0, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("loss", LOSS)
@pytest.mark.parametrize("gradient", GRADIENT)
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 5))
def test_rows_are_scaled_by_k_times_the_loss_coefficients(gradient, loss, seed, k):
    """The gradient method sees diag(K c) G, the weights come back multiplied by K c: direction = G^T weights."""
    composed = make(gradient, loss, k, **seeded(gradient))
    reference_loss = B.make(loss, k, **LOSS_OPTIONS.get(loss, {}))
    reference_gradient = B.make(gradient, k, **seeded(gradient))
    for step in range(4):
        G, losses = rand(seed + step, k, 7), rand(seed + 100 + step, k).abs() + 0.1
        d, w = composed.combine(G, losses)
        scale = k * reference_loss.weights(losses)
        d0, w0 = reference_gradient.combine(scale[:, None] * G, losses)
        torch.testing.assert_close(d, d0, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(w, scale * w0, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(d, w @ G, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(composed.last_gram, G @ G.T, rtol=1e-7, atol=1e-9)
        composed.update(losses, 0.9 * losses)
        reference_loss.update(losses, 0.9 * losses)


def one_hot_famo(gradient, k, task):
    """A composition whose FAMO task weights are exactly one-hot (the other logits at -inf)."""
    composed = make(gradient, "famo", k, **seeded(gradient))
    composed.loss_weighting.logits = torch.where(torch.arange(k) == task, 0.0, float("-inf")).double()
    return composed


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 6), data=st.data())
def test_one_hot_loss_weights_give_that_tasks_gradient(seed, k, data):
    task = data.draw(st.integers(0, k - 1))
    G, losses = rand(seed, k, 8), rand(seed + 1, k).abs() + 0.1
    composed = one_hot_famo("pcgrad", k, task)
    d, w = composed.combine(G, losses)
    torch.testing.assert_close(d, G[task], rtol=1e-12, atol=1e-12)  # pcgrad: exactly g_task
    assert composed.last_gram is None  # zeroed rows: the unscaled Gram is not recoverable
    for gradient in ("cagrad", "fairgrad", "nashmtl"):  # a positive multiple of g_task
        d, _ = one_hot_famo(gradient, k, task).combine(G, losses)
        scale = float(d @ G[task]) / float(G[task] @ G[task])
        assert scale > 0
        torch.testing.assert_close(d, scale * G[task], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("loss", LOSS)
@pytest.mark.parametrize("gradient", GRADIENT)
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), dim=st.integers(1, 6))
def test_single_task_reduces_to_a_positive_multiple_of_the_plain_gradient(gradient, loss, seed, dim):
    g = rand(seed, 1, dim)
    if g.norm() < 1e-3:
        return
    composed = make(gradient, loss, 1)
    for step in range(3):
        d, _ = composed.combine(g, torch.tensor([0.7 + step], dtype=torch.float64))
        scale = float(d @ g[0]) / float(g[0] @ g[0])
        assert scale > 0
        torch.testing.assert_close(d, scale * g[0], rtol=1e-9, atol=1e-12)


def test_famo_keeps_its_two_phase_update_inside_a_composition():
    assert B.make("famo", 3).needs_after_step and not B.make("igb", 3).needs_after_step
    assert make("pcgrad", "famo", 3).needs_after_step and not make("pcgrad", "igbv2", 3).needs_after_step
    assert not B.make("pcgrad", 3).needs_after_step and not B.make("igbv2", 3).needs_after_step

    k, obs, act = 3, 39, 4
    torch.manual_seed(0)
    agent = SACAgent(
        obs,
        act,
        ["reach-v3", "push-v3", "drawer-close-v3"],
        SACConfig(hidden_sizes=[32, 32]),
        {"name": "onehot"},
        torch.device("cpu"),
    )
    agent.set_balancers(make("nashmtl", "famo", k), make("pcgrad", "igbv2", k, seed=0))
    assert agent.critic_objective.needs_after_step and not agent.actor_objective.needs_after_step
    rng = np.random.default_rng(0)
    replay = MultiTaskReplay(k, 64, obs, act, seed=0)
    for _ in range(64):
        replay.add(
            np.arange(k),
            rng.normal(size=(k, obs)),
            rng.uniform(-1, 1, (k, act)),
            rng.uniform(size=k),
            rng.normal(size=(k, obs)),
            np.zeros(k),
        )
    for _ in range(3):
        metrics = agent.update(replay.sample(np.full(k, 8)))
    assert all(torch.isfinite(v).all() for v in metrics.values())
    famo = agent.critic_objective.balancer.loss_weighting
    assert famo.adam_step == 3 and not torch.equal(famo.logits, torch.zeros(k, dtype=torch.float64))
    assert agent.actor_objective.balancer.loss_weighting.calls == 3


def test_objective_reads_the_declared_attribute():
    module = torch.nn.Linear(2, 1)
    assert BalancedObjective(make("cagrad", "famo", 2), module, 2).needs_after_step
    assert not BalancedObjective(make("cagrad", "igb", 2), module, 2).needs_after_step


@pytest.mark.parametrize("gradient, loss", [("pcgrad", "igbv2"), ("nashmtl", "famo"), ("cagrad", "igb")])
def test_state_dict_round_trip_holds_both_halves(gradient, loss):
    k = 4
    batches = [(rand(s, k, 6), rand(s + 50, k).abs() + 0.1) for s in range(10)]

    def step(bal, G, losses):
        out = bal.combine(G, losses)
        bal.update(losses, 0.9 * losses)
        return out

    bal = make(gradient, loss, k, **seeded(gradient))
    for G, losses in batches[:5]:
        step(bal, G, losses)
    buffer = io.BytesIO()
    torch.save(bal.state_dict(), buffer)
    assert set(bal.state_dict()) == {"loss_weighting", "gradient"}
    expected = [step(bal, G, losses) for G, losses in batches[5:]]
    buffer.seek(0)
    restored = make(gradient, loss, k, **({"seed": 9} if gradient == "pcgrad" else {}))
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    for (G, losses), (d, w) in zip(batches[5:], expected):
        d2, w2 = step(restored, G, losses)
        assert torch.equal(d, d2) and torch.equal(w, w2)


@pytest.mark.parametrize(
    "name, opts, fragments",
    [
        (
            "famo",
            {"loss_weighting": "igb"},
            ["balancer.loss_weighting='igb'", "famo weights the losses itself", "pcgrad"],
        ),
        ("pcgrad", {"loss_weighting": "nashmtl"}, ["balancer.loss_weighting='nashmtl'", "famo, igb, igbv2, uniform"]),
        ("pcgrad", {"loss_weighting": "igbv3"}, ["'igbv3'", "famo, igb, igbv2, uniform"]),
        ("cagrad", {"loss_weighting_options": {"base_step": 2}}, ["balancer.loss_weighting_options=", "without"]),
        (
            "cagrad",
            {"loss_weighting": "igb", "loss_weighting_options": {"lr": 1}},
            ["balancer.loss_weighting_options: unknown option 'lr'", "base_step, eps"],
        ),
        (
            "cagrad",
            {"loss_weighting": "igb", "loss_weighting_options": {"base_step": 0}},
            ["balancer.loss_weighting_options: balancer.base_step=0", ">= 1"],
        ),
        ("cagrad", {"loss_weighting": "igb", "loss_weighting_options": [1]}, ["loss_weighting_options=[1]", "mapping"]),
    ],
)
def test_bad_compositions_are_one_line_errors(name, opts, fragments):
    with pytest.raises(UserError) as info:
        B.make(name, 3, **opts)
    assert "\n" not in str(info.value) and all(f in str(info.value) for f in fragments), str(info.value)


def test_options_list_the_composition_keys_for_gradient_methods_only():
    assert B.options("nashmtl")[-2:] == ["loss_weighting", "loss_weighting_options"]
    assert "loss_weighting" not in B.options("famo") and "loss_weighting" not in B.options("igbv2")
    assert type(B.make("pcgrad", 3, loss_weighting=None, loss_weighting_options={})) is B.PCGrad
