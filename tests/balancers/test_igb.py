"""IGB v1: log-loss weights K softmax(l / l_base) (sum K), coefficients on raw losses w / (K l)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mtrl.balancers as B


def rand(seed, *shape):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.1


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 8))
def test_weights_follow_the_softmax_of_the_loss_ratio(seed, k):
    bal = B.make("igb", num_tasks=k)
    first, later = rand(seed, k), rand(seed + 1, k)
    # before the base is frozen: plain mean of log-losses
    torch.testing.assert_close(bal.weights(first), 1.0 / (k * first))
    torch.testing.assert_close(bal.base_losses, first)
    log_w = bal.log_loss_weights(later)
    expected = k * torch.softmax(later / first, 0)
    torch.testing.assert_close(log_w, expected)
    torch.testing.assert_close(log_w.sum(), torch.tensor(float(k), dtype=torch.float64))
    coef = bal.weights(later)
    torch.testing.assert_close(coef, expected / (k * later))
    # the coefficients are the gradient of (1/K) sum_i w_i log l_i with w held constant
    x = later.clone().requires_grad_(True)
    (expected * torch.log(x)).sum().div(k).backward()
    torch.testing.assert_close(coef, x.grad)


def test_larger_remaining_gap_gets_more_weight_and_base_is_frozen():
    bal = B.make("igb", num_tasks=3, base_step=2)
    bal.weights(torch.tensor([1.0, 2.0, 4.0]))
    assert bal.base_losses is None
    bal.weights(torch.tensor([3.0, 2.0, 2.0]))
    torch.testing.assert_close(bal.base_losses, torch.tensor([2.0, 2.0, 3.0], dtype=torch.float64))
    now = torch.tensor([1.0, 1.8, 2.9])  # task 0 improved most, task 2 least
    w = bal.log_loss_weights(now)
    assert w[2] > w[1] > w[0]
    bal.weights(now)
    torch.testing.assert_close(bal.base_losses, torch.tensor([2.0, 2.0, 3.0], dtype=torch.float64))
