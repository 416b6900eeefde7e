"""Pareto MTL: preference vectors, the feasibility phase, descent in the main phase, a Pareto sweep on bowls."""

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mtrl.balancers as B
from mtrl.balancers.paretomtl import preference_vectors
from mtrl.errors import UserError


def angles_between(V: np.ndarray) -> np.ndarray:
    """Pairwise angles (radians) between the rows of V (unit vectors)."""
    return np.arccos(np.clip(V @ V.T, -1.0, 1.0))


# ----------------------------------------------------------------------------- preference vectors
@pytest.mark.parametrize("m", [2, 3, 5, 8])
def test_two_task_preferences_are_equal_angles_on_the_quarter_circle(m):
    P = preference_vectors(2, m)
    angles = np.arctan2(P[:, 1], P[:, 0])
    np.testing.assert_allclose(np.diff(angles), np.full(m - 1, 0.5 * np.pi / (m - 1)), atol=1e-12)
    np.testing.assert_allclose(P[0], [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(P[-1], [0.0, 1.0], atol=1e-12)


@pytest.mark.parametrize("k, m, divisions", [(3, 3, 1), (3, 6, 2), (3, 10, 3), (4, 10, 2), (5, 5, 1)])
def test_lattice_sizes_give_the_whole_das_dennis_lattice(k, m, divisions):
    P = preference_vectors(k, m)
    assert P.shape == (m, k) and m == math.comb(divisions + k - 1, k - 1)
    np.testing.assert_allclose(np.linalg.norm(P, axis=1), 1.0)
    lattice = P / P.sum(axis=1, keepdims=True) * divisions  # back on the simplex: integer coordinates
    np.testing.assert_allclose(lattice, np.round(lattice), atol=1e-9)
    assert len({tuple(row) for row in np.round(lattice).astype(int)}) == m
    # evenly spread on the simplex: every point's nearest neighbour is one lattice step (sqrt(2)/H) away
    simplex = lattice / divisions
    dist = np.linalg.norm(simplex[:, None] - simplex[None], axis=2) + np.eye(m) * 9
    np.testing.assert_allclose(dist.min(axis=1), math.sqrt(2) / divisions, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(3, 5), m=st.integers(1, 40))
def test_other_sizes_are_a_farthest_point_subset_that_covers_the_lattice(k, m):
    P = preference_vectors(k, m)
    assert P.shape == (m, k) and (P >= 0).all()
    np.testing.assert_array_equal(P, preference_vectors(k, m))  # deterministic
    np.testing.assert_allclose(np.linalg.norm(P, axis=1), 1.0)
    if m == 1:
        return
    divisions = next(h for h in range(1, 50) if math.comb(h + k - 1, k - 1) >= m)
    full = preference_vectors(k, math.comb(divisions + k - 1, k - 1))
    separation = (angles_between(P) + np.eye(m) * 9).min()
    covering = np.arccos(np.clip(full @ P.T, -1, 1)).min(axis=1).max()
    assert separation > 1e-6  # distinct
    assert covering <= separation + 1e-9  # no lattice point is farther from the set than its closest pair


def test_single_task_preferences():
    np.testing.assert_array_equal(preference_vectors(1, 3), np.ones((3, 1)))


# ----------------------------------------------------------------------------- options
def test_explicit_preference_vector_is_normalised_and_drops_its_duplicate():
    bal = B.make("paretomtl", num_tasks=2, num_preferences=5, preference=[2.0, 2.0])
    np.testing.assert_allclose(bal.preference, [math.sqrt(0.5)] * 2)
    assert bal.constraints.shape == (4, 2)  # u = (1, 1)/sqrt 2 is the generated vector 2: not its own competitor
    assert B.make("paretomtl", num_tasks=2, num_preferences=5, preference=[1.0, 3.0]).constraints.shape == (5, 2)


@pytest.mark.parametrize(
    "opts, fragments",
    [
        ({"preference": 5}, ["balancer.preference=5", "[0, 4]"]),
        ({"preference": [1.0]}, ["balancer.preference=[1.0]", "an index 0..4 or a list of 2 non-negative numbers"]),
        ({"preference": [0.0, 0.0]}, ["balancer.preference=[0.0, 0.0]", "at least one positive"]),
        ({"preference": [1.0, -1.0]}, ["balancer.preference[1]=-1.0", ">= 0"]),
        ({"preference": "a"}, ["balancer.preference='a'"]),
        ({"num_preferences": 0}, ["balancer.num_preferences=0", "[1, 1000]"]),
        ({"init_steps": -1}, ["balancer.init_steps=-1", ">= 0"]),
        ({"eps": -0.1}, ["balancer.eps=-0.1"]),
    ],
)
def test_bad_options_are_one_line_errors(opts, fragments):
    with pytest.raises(UserError) as info:
        B.make("paretomtl", num_tasks=2, **opts)
    assert "\n" not in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_losses_are_required():
    with pytest.raises(UserError, match="paretomtl needs the task losses"):
        B.make("paretomtl", num_tasks=2).combine(torch.randn(2, 3))


# ----------------------------------------------------------------------------- simulated training on bowls
def bowls(centres: torch.Tensor):
    """Task i's loss 0.5 |theta - a_i|^2 + 0.05 (positive) and its gradient."""

    def evaluate(theta: torch.Tensor):
        diff = theta[None] - centres
        return 0.5 * (diff**2).sum(1) + 0.05, diff

    return evaluate


def in_region(bal, losses: np.ndarray, slack: float = 0.0) -> bool:
    """The angle condition: u_k . L >= u_j . L for every other preference u_j (L normalised)."""
    unit = losses / np.linalg.norm(losses)
    return bool((bal.constraints @ unit <= slack).all())


@pytest.mark.parametrize("eps", [0.0, 0.05])
@pytest.mark.parametrize(
    "k, preference, start",
    [(2, 0, [0.9, 0.05]), (2, 1, [0.9, 0.05]), (2, 3, [0.05, 0.9]), (3, 0, [0.05, 0.9, 0.1]), (3, 5, [0.9, 0.05, 0.0])],
)
def test_feasibility_phase_moves_the_loss_vector_into_its_region(k, preference, start, eps):
    evaluate = bowls(torch.eye(k, dtype=torch.float64))
    bal = B.make(
        "paretomtl", num_tasks=k, num_preferences=5 if k == 2 else 6, preference=preference, init_steps=500, eps=eps
    )
    theta = torch.tensor(start, dtype=torch.float64)
    L, G = evaluate(theta)
    assert not in_region(bal, L.numpy())  # starts outside
    for step in range(500):  # noqa: B007 (read after the loop)
        L, G = evaluate(theta)
        violated = bal.constraint_values(L.numpy()) > 0
        d, _ = bal.combine(G, L)
        if bal.init_done:
            break
        C = torch.from_numpy(bal.constraints[violated]) @ G  # gradients of the violated constraints
        assert (C @ d >= -1e-12).all()  # each violated constraint decreases to first order
        theta = theta - 0.1 * d
    assert bal.init_done and bal.step == step + 1 < 500
    assert in_region(bal, L.numpy())  # the phase ended at a feasible loss vector


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1), k=st.integers(2, 4), preference=st.integers(0, 4), eps=st.sampled_from([0.0, 0.05])
)
def test_main_phase_direction_decreases_every_task_and_active_constraint(seed, k, preference, eps):
    gen = torch.Generator().manual_seed(seed)
    G = torch.randn(k, 6, generator=gen, dtype=torch.float64)
    L = torch.rand(k, generator=gen, dtype=torch.float64) + 0.05
    bal = B.make("paretomtl", num_tasks=k, num_preferences=5, preference=preference, init_steps=0, eps=eps)
    d, w = bal.combine(G, L)
    active = bal.active_constraints(L.numpy())
    scale = float(G.norm(dim=1).max()) ** 2
    assert (G @ d >= -1e-9 * scale).all()
    C = torch.from_numpy(bal.constraints[active]) @ G
    assert (C @ d >= -1e-9 * scale).all()
    torch.testing.assert_close(d, w @ G)
    assert abs(float(w.abs().sum()) - 1.0) < 1e-12 or float(w.abs().sum()) == 0.0


def test_a_preference_sweep_on_two_bowls_traces_the_pareto_front_in_order():
    """Each preference ends in its own region, at a Pareto-stationary point; task 0's loss falls as k grows."""
    evaluate = bowls(torch.eye(2, dtype=torch.float64))
    finals = []
    for k in range(5):
        bal = B.make("paretomtl", num_tasks=2, num_preferences=5, preference=k, init_steps=200)
        theta = torch.tensor([0.9, 0.05], dtype=torch.float64)
        for _ in range(800):
            L, G = evaluate(theta)
            d, _ = bal.combine(G, L)
            theta = theta - 0.2 * d
        L, G = evaluate(theta)
        assert in_region(bal, L.numpy(), slack=1e-3)
        # Pareto stationary for two bowls: the gradients are opposite (0 in their hull)
        assert float(B.make("mgda", num_tasks=2).combine(G)[0].norm()) < 1e-3
        finals.append(L.numpy())
    finals = np.array(finals)
    assert (np.diff(finals[:, 0]) < 0).all() and (np.diff(finals[:, 1]) > 0).all()


# ----------------------------------------------------------------------------- edge cases and state
def test_single_task_gives_the_plain_gradient():
    g = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    for init_steps in (0, 10):
        d, _ = B.make("paretomtl", num_tasks=1, init_steps=init_steps).combine(g, torch.tensor([0.3]))
        torch.testing.assert_close(d, g[0], rtol=0, atol=0)


@pytest.mark.parametrize(
    "G, L",
    [
        (torch.zeros(3, 4), torch.tensor([1.0, 2.0, 3.0])),
        (torch.randn(3, 4), torch.zeros(3)),
        (torch.stack([torch.ones(4), -torch.ones(4), torch.zeros(4)]), torch.tensor([1e-30, 5.0, 1e6])),
        (1e15 * torch.randn(3, 4), torch.tensor([1.0, 0.1, 0.5])),
    ],
)
def test_degenerate_inputs_give_finite_output(G, L):
    bal = B.make("paretomtl", num_tasks=3, num_preferences=6, preference=2, init_steps=3)
    for _ in range(5):
        d, w = bal.combine(G, L)
        assert torch.isfinite(d).all() and torch.isfinite(w).all()


def test_state_dict_round_trip_reproduces_the_next_outputs():
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(3, 8, generator=gen, dtype=torch.float64), torch.rand(3, generator=gen, dtype=torch.float64) + 0.1)
        for _ in range(8)
    ]
    bal = B.make("paretomtl", num_tasks=3, num_preferences=6, preference=4, init_steps=6)
    for G, L in batches[:3]:
        bal.combine(G, L)
    buffer = io.BytesIO()
    torch.save(bal.state_dict(), buffer)
    expected = [bal.combine(G, L) for G, L in batches[3:]]
    buffer.seek(0)
    restored = B.make("paretomtl", num_tasks=3, num_preferences=6, preference=4, init_steps=6)
    restored.load_state_dict(torch.load(buffer))
    for (G, L), (d, w) in zip(batches[3:], expected):
        d2, w2 = restored.combine(G, L)
        assert torch.equal(d, d2) and torch.equal(w, w2)
    assert restored.state_dict() == bal.state_dict()
