"""gradient_stats: cosines, off-diagonal mean, conflict fraction and norms from one Gram matrix."""

import math

import torch

import mtrl.balancers as B


def test_known_vectors():
    G = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [0.0, 0.0]])
    s = B.gradient_stats(G)
    torch.testing.assert_close(s["norms"], torch.tensor([1.0, 2.0, 1.0, 0.0], dtype=torch.float64))
    expected = torch.tensor([[1.0, 0, -1, 0], [0, 1, 0, 0], [-1, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(s["cosine"], expected)
    assert math.isclose(s["mean_cosine"], -1.0 / 6.0)
    assert math.isclose(s["conflict_fraction"], 1.0 / 6.0)


def test_gram_argument_and_balancer_gram_agree():
    G = torch.randn(5, 11, dtype=torch.float64)
    bal = B.make("pcgrad", num_tasks=5, seed=0)
    bal.combine(G)
    a, b = B.gradient_stats(G), B.gradient_stats(gram=bal.last_gram)
    torch.testing.assert_close(a["cosine"], b["cosine"])
    torch.testing.assert_close(a["cosine"], torch.nn.functional.cosine_similarity(G[:, None], G[None], dim=-1))
    assert a["conflict_fraction"] == b["conflict_fraction"]


def test_single_task_has_no_pairs():
    s = B.gradient_stats(torch.ones(1, 3))
    assert math.isnan(s["mean_cosine"]) and s["conflict_fraction"] == 0.0
