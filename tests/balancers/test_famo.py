"""FAMO: gradient coefficients, the logit update (softmax-Jacobian^T delta + L2 decay + Adam), its fixed point."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mtrl.balancers as B


def rand(seed, *shape):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 8))
def test_weights_are_the_papers_gradient_coefficients(seed, k):
    bal = B.make("famo", num_tasks=k, min_losses=0.1)
    bal.logits = torch.randn(k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    losses = rand(seed, k) + 0.2
    z = torch.softmax(bal.logits, 0)
    D = losses - 0.1 + 1e-8
    q = z / D
    torch.testing.assert_close(bal.weights(losses), q / q.sum(), rtol=1e-12, atol=0)
    # which is the gradient of sum_i (z_i / c) log D_i with c = sum_j z_j / D_j held constant
    x = losses.clone().requires_grad_(True)
    (torch.log(x - 0.1 + 1e-8) * z / q.sum()).sum().backward()
    torch.testing.assert_close(bal.weights(losses), x.grad, rtol=1e-12, atol=0)
    mtrl = B.make("famo", num_tasks=k, variant="mtrl")  # the authors' code: times c, no minimum losses
    mtrl.logits = bal.logits.clone()
    q_mtrl = z / (losses + 1e-8)
    torch.testing.assert_close(mtrl.weights(losses), q_mtrl * q_mtrl.sum(), rtol=1e-12, atol=0)


def test_logits_follow_the_paper_update_on_a_scripted_loss_sequence():
    """Reference: autograd through softmax for J^T delta, torch.optim.Adam with L2 weight decay."""
    k, lr, gamma = 4, 0.025, 0.01
    mins = [0.0, 0.1, 0.0, 0.05]
    bal = B.make("famo", num_tasks=k, lr=lr, gamma=gamma, min_losses=mins)
    xi = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    adam = torch.optim.Adam([xi], lr=lr, weight_decay=gamma)
    gen = torch.Generator().manual_seed(0)
    losses = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    rates = torch.tensor([0.99, 0.9, 0.999, 0.95], dtype=torch.float64)  # task 2 learns slowest
    mins_t = torch.tensor(mins, dtype=torch.float64)
    for _ in range(25):
        after = mins_t + (losses - mins_t) * rates * (1 + 0.01 * torch.rand(k, generator=gen, dtype=torch.float64))
        delta = torch.log(losses - mins_t + 1e-8) - torch.log(after - mins_t + 1e-8)
        adam.zero_grad()
        xi.grad = torch.autograd.grad(torch.softmax(xi, 0), xi, grad_outputs=delta)[0]
        adam.step()
        bal.update(losses, after)
        torch.testing.assert_close(bal.logits, xi.detach(), rtol=1e-10, atol=1e-12)
        losses = after
    assert int(torch.argmax(bal.task_weights())) == 2  # the slowest task gained weight


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 8), ratio=st.floats(0.5, 1.5))
def test_logit_gradient_vanishes_when_log_losses_drop_equally(seed, k, ratio):
    bal = B.make("famo", num_tasks=k, min_losses=0.05, gamma=0.0)
    bal.logits = torch.randn(k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    before = rand(seed, k) + 0.1
    after = 0.05 + (before - 0.05 + 1e-8) * ratio - 1e-8  # every D_i scaled by the same ratio
    assert float(bal.logit_gradient(before, after).abs().max()) <= 1e-12
    logits = bal.logits.clone()
    bal.update(before, after)
    torch.testing.assert_close(bal.logits, logits, rtol=0, atol=1e-9)  # Adam moves ~lr * 0/eps


def test_losses_below_the_minimum_are_clamped_not_nan():
    bal = B.make("famo", num_tasks=3)
    losses = torch.tensor([-1.0, 0.0, 2.0])
    w = bal.weights(losses)
    assert torch.isfinite(w).all() and abs(float(w.sum()) - 1.0) < 1e-6
    bal.update(losses, losses - 1.0)
    assert torch.isfinite(bal.logits).all()
