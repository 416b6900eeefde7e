"""Lookahead affinity: one vectorised pass equals K separate SGD steps; the accumulator and its file."""

import copy

import numpy as np
import pytest
import torch
from torch.func import functional_call

import mtrl.balancers as B
from mtrl.balancers.affinity import AFFINITY_FILE, AffinityAccumulator, lookahead_affinity
from mtrl.balancers.objective import BalancedObjective
from mtrl.errors import UserError
from mtrl.networks import make_network

K, IN = 3, 4


def setup(counts, seed=0):
    """A real multi-head network (shared trunk, per-task heads), its objective and a task-contiguous batch."""
    torch.manual_seed(seed)
    net = make_network("multihead", IN, 1, K, [8, 8]).double()
    objective = BalancedObjective(B.make("uniform", K), net, K)
    counts = torch.tensor(counts)
    n = int(counts.sum())
    tensors = {
        "obs": torch.randn(n, IN, dtype=torch.float64),
        "task_ids": torch.repeat_interleave(torch.arange(K), counts),
        "target": torch.randn(n, dtype=torch.float64),
    }

    def sample_loss(params, obs, task_ids, target):
        return (functional_call(net, params, (obs, task_ids)).squeeze(-1) - target) ** 2

    return net, objective, sample_loss, tensors, counts


def reference_affinity(net, sample_loss, tensors, counts, lr):
    """K explicit SGD steps on copies of the network, each on one task's loss, shared parameters only."""

    def losses_of(module):
        objective = BalancedObjective(B.make("uniform", K), module, K)
        return objective, objective.task_losses(sample_loss, tensors, counts, params=dict(module.named_parameters()))[0]

    objective, before = losses_of(net)
    shared = [name for name, _ in net.named_parameters() if name.startswith("trunk")]  # the heads are per task
    assert objective.num_shared == sum(p.numel() for name, p in net.named_parameters() if name in shared)
    rows = []
    for i in range(K):
        clone = copy.deepcopy(net)
        params = dict(clone.named_parameters())
        _, losses = losses_of(clone)
        grads = torch.autograd.grad(losses[i], [params[n] for n in shared])
        with torch.no_grad():
            for name, grad in zip(shared, grads):
                params[name] -= lr * grad
        rows.append(losses_of(clone)[1].detach())
    after = torch.stack(rows)
    return 1.0 - after / before.detach()


@pytest.mark.parametrize("counts", [[5, 5, 5], [6, 2, 4]])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_vectorised_lookahead_equals_k_separate_sgd_steps(counts, chunk_size):
    net, objective, sample_loss, tensors, counts = setup(counts)
    state = copy.deepcopy(net.state_dict())
    Z = lookahead_affinity(objective, sample_loss, tensors, counts, lr=0.05, chunk_size=chunk_size)
    expected = reference_affinity(net, sample_loss, tensors, counts, lr=0.05)
    assert Z.shape == (K, K) and Z.dtype == torch.float64
    torch.testing.assert_close(Z, expected, rtol=1e-9, atol=1e-12)
    assert (torch.diagonal(Z) > 0).all()  # a small step on task i lowers task i's own loss
    for name, value in net.state_dict().items():  # the network is left as it was
        assert torch.equal(value, state[name])


def test_identical_tasks_have_equal_affinities_and_negative_losses_keep_the_sign():
    net, objective, sample_loss, tensors, counts = setup([4, 4, 4])
    tensors["obs"] = tensors["obs"][:4].repeat(K, 1)
    tensors["target"] = tensors["target"][:4].repeat(K)
    with torch.no_grad():  # identical heads: the three tasks are the same task
        net.heads.weight.copy_(net.heads.weight[:1].expand_as(net.heads.weight))
        net.heads.bias.copy_(net.heads.bias[:1].expand_as(net.heads.bias))
    Z = lookahead_affinity(objective, sample_loss, tensors, counts, lr=0.05)
    torch.testing.assert_close(Z, torch.full_like(Z, float(Z[0, 0])))
    assert float(Z[0, 0]) > 0

    def negative(params, **batch):
        return sample_loss(params, **batch) - 100.0  # the same gradients, negative losses

    Z_neg = lookahead_affinity(objective, negative, tensors, counts, lr=0.05)
    assert (Z_neg > 0).all()  # still "the step lowered the loss"
    losses = objective.task_losses(sample_loss, tensors, counts)[0].detach()
    assert (losses < 100).all()
    # same loss decrease, divided by |L_j - 100| instead of L_j
    torch.testing.assert_close(Z_neg, Z * (losses / (100.0 - losses))[None, :], rtol=1e-6, atol=1e-12)


def test_accumulator_means_skips_non_finite_entries_and_round_trips_through_its_file(tmp_path):
    acc = AffinityAccumulator(["a", "b"])
    acc.add("critic", torch.tensor([[1.0, 2.0], [3.0, float("nan")]]))
    acc.add("critic", np.array([[3.0, 4.0], [5.0, 6.0]]))
    acc.add("actor", np.zeros((2, 2)))
    np.testing.assert_array_equal(acc.mean("critic"), [[2.0, 3.0], [4.0, 6.0]])
    np.testing.assert_array_equal(acc.mean(), [[1.0, 1.5], [2.0, 3.0]])  # mean over the networks
    assert acc.networks == ["actor", "critic"]
    path = acc.save(tmp_path)
    assert path == tmp_path / AFFINITY_FILE and sorted(p.name for p in tmp_path.iterdir()) == [AFFINITY_FILE]
    loaded = AffinityAccumulator.load(tmp_path)
    assert loaded.tasks == ["a", "b"] and loaded.networks == ["actor", "critic"]
    np.testing.assert_array_equal(loaded.mean("critic"), acc.mean("critic"))
    np.testing.assert_array_equal(loaded.counts["critic"], [[2, 2], [2, 1]])
    loaded.add("critic", np.ones((2, 2)))  # keeps accumulating after a resume
    assert loaded.counts["critic"][0, 0] == 3


def test_accumulator_errors(tmp_path):
    acc = AffinityAccumulator(["a", "b"])
    with pytest.raises(UserError, match="no affinity has been measured yet"):
        acc.mean()
    with pytest.raises(ValueError, match=r"expected shape \(2, 2\)"):
        acc.add("critic", np.zeros((3, 3)))
    acc.add("critic", np.zeros((2, 2)))
    with pytest.raises(UserError, match="network=actor is not allowed; expected one of: critic"):
        acc.mean("actor")
    with pytest.raises(UserError, match="does not exist"):
        AffinityAccumulator.load(tmp_path)
    (tmp_path / AFFINITY_FILE).write_text("not an npz")
    with pytest.raises(UserError, match="cannot read"):
        AffinityAccumulator.load(tmp_path)
    other = AffinityAccumulator(["a", "c"])
    with pytest.raises(UserError, match="this run has"):
        other.load_state_dict(acc.state_dict())
