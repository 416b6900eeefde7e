"""Per-task gradients: one vmap(grad) pass equals K autograd calls; flatten / write-back helpers."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from mtrl.balancers import flatten, per_task_gradients, per_task_gradients_loop, write_direction

K, N, OBS, HID = 4, 6, 5, 8


def setup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(OBS, HID), nn.Tanh(), nn.Linear(HID, 1))
    batch = {"obs": torch.randn(K, N, OBS), "target": torch.randn(K, N), "mask": (torch.rand(K, N) > 0.3).float()}
    batch["mask"][:, 0] = 1.0

    def loss_fn(params, chunk):
        """Masked MSE of one task's chunk."""
        pred = functional_call(net, params, (chunk["obs"],)).squeeze(-1)
        err = (pred - chunk["target"]) ** 2 * chunk["mask"]
        return err.sum() / chunk["mask"].sum()

    return net, batch, loss_fn


def test_vmap_matches_the_per_task_loop():
    net, batch, loss_fn = setup()
    params = dict(net.named_parameters())
    G = per_task_gradients(loss_fn, params, batch)
    losses = torch.stack([loss_fn(params, {k: v[i] for k, v in batch.items()}) for i in range(K)])
    reference = per_task_gradients_loop(losses, list(params.values()))
    assert G.shape == (K, sum(p.numel() for p in net.parameters()))
    torch.testing.assert_close(G, reference, rtol=1e-5, atol=1e-5)
    G_chunked, vmap_losses = per_task_gradients(loss_fn, params, batch, chunk_size=3, return_losses=True)
    torch.testing.assert_close(G_chunked, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vmap_losses, losses.detach())
    assert not G.requires_grad


def test_aux_outputs_come_back_stacked_over_tasks():
    net, batch, loss_fn = setup()
    params = dict(net.named_parameters())

    def with_aux(params, chunk):
        return loss_fn(params, chunk), {"mean_target": chunk["target"].mean()}

    expected_aux = batch["target"].mean(1)
    G = per_task_gradients(loss_fn, params, batch)
    G_aux, aux = per_task_gradients(with_aux, params, batch, has_aux=True)
    torch.testing.assert_close(G_aux, G)
    torch.testing.assert_close(aux["mean_target"], expected_aux)
    G_both, (losses, aux) = per_task_gradients(with_aux, params, batch, has_aux=True, return_losses=True)
    torch.testing.assert_close(G_both, G)
    torch.testing.assert_close(losses, per_task_gradients(loss_fn, params, batch, return_losses=True)[1])
    torch.testing.assert_close(aux["mean_target"], expected_aux)


def test_loop_reference_fills_unused_parameters_with_zeros():
    a, b = torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)
    losses = torch.stack([(a * 2).sum(), (a * 3).sum()])
    G = per_task_gradients_loop(losses, [a, b])
    torch.testing.assert_close(G, torch.tensor([[2.0, 2, 0, 0, 0], [3.0, 3, 0, 0, 0]]))


def test_write_direction_sets_grads_and_flatten_round_trips():
    net, _, _ = setup()
    params = list(net.parameters())
    for p in params:
        p.grad = torch.full_like(p, 7.0)  # overwritten, not accumulated
    direction = torch.arange(sum(p.numel() for p in params), dtype=torch.float32)
    write_direction(direction, params)
    torch.testing.assert_close(flatten(p.grad for p in params), direction)
    with pytest.raises(ValueError, match="parameters need"):
        write_direction(direction[:-1], params)
    stacked = [torch.ones(3, 2, 2), torch.zeros(3, 4)]
    assert flatten(stacked, batch_dims=1).shape == (3, 8)
