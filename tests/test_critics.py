"""The stacked twin critic (mtrl/agents/critics.py) equals two separate critics, and loads their checkpoints."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mtrl.agents import SACAgent, SACConfig
from mtrl.agents.critics import StackedTwinQ, TwinQ, stacked_adam_state
from mtrl.agents.optim import adam_step, make_adam
from mtrl.networks import make_network
from tests.test_balanced_training import _replay

K, OBS, ACT = 3, 39, 4


def twins(encoder: str, out_dim: int = 1) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return tuple(make_network(encoder, OBS + ACT, out_dim, K, [64, 64]) for _ in range(2))


@pytest.mark.parametrize("encoder, one_hot", [("onehot", True), ("none", False)])
@pytest.mark.parametrize("scalar", [True, False])
def test_the_stacked_critic_equals_two_separate_ones_in_values_and_gradients(encoder, one_hot, scalar):
    q1, q2 = twins(encoder, 1 if scalar else 11)
    separate, stacked = TwinQ(copy.deepcopy(q1), copy.deepcopy(q2), scalar), StackedTwinQ(q1, q2, one_hot, scalar)
    obs, action = torch.randn(32, OBS), torch.randn(32, ACT, requires_grad=True)
    ids = torch.randint(0, K, (32,))
    outputs = [net(obs, action, ids) for net in (separate, stacked)]
    for a, b in zip(*outputs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    grads = []
    for net, (a, b) in zip((separate, stacked), outputs):
        loss = (a.pow(2) + 3 * b).sum()
        grads.append(torch.autograd.grad(loss, [action, *net.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=1e-5)  # the actor's path through the critics
    layers = len(stacked.weights)
    for i in range(layers):  # separate order: q1's (weight, bias) per layer, then q2's
        for j in range(2):
            torch.testing.assert_close(grads[1][1 + i][j], grads[0][1 + j * 2 * layers + 2 * i], rtol=0, atol=1e-5)
            torch.testing.assert_close(
                grads[1][1 + layers + i][j, 0], grads[0][2 + j * 2 * layers + 2 * i], rtol=0, atol=1e-5
            )


def test_the_stacked_critic_handles_one_task_chunks_and_extra_leading_dims():
    q1, q2 = twins("onehot")
    separate, stacked = TwinQ(copy.deepcopy(q1), copy.deepcopy(q2)), StackedTwinQ(q1, q2, True)
    obs, action, ids = torch.randn(2, 5, OBS), torch.randn(2, 5, ACT), torch.randint(0, K, (2, 5))
    for a, b in zip(separate(obs, action, ids), stacked(obs, action, ids)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    chunks = torch.func.vmap(lambda o, a, t: stacked(o, a, t))(obs, action, torch.tensor([0, 2]))
    expected = separate(obs, action, torch.tensor([[0] * 5, [2] * 5]))
    for a, b in zip(chunks, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_its_state_dict_has_the_separate_critics_keys_both_ways():
    q1, q2 = twins("onehot")
    separate, stacked = TwinQ(copy.deepcopy(q1), copy.deepcopy(q2)), StackedTwinQ(q1, q2, True)
    assert stacked.state_dict().keys() == separate.state_dict().keys()
    fresh = StackedTwinQ(*twins("onehot"), True)
    torch.manual_seed(5)
    other = TwinQ(*(make_network("onehot", OBS + ACT, 1, K, [64, 64]) for _ in range(2)))
    fresh.load_state_dict(other.state_dict())  # a checkpoint of two separate critics
    obs, action, ids = torch.randn(8, OBS), torch.randn(8, ACT), torch.randint(0, K, (8,))
    for a, b in zip(fresh(obs, action, ids), other(obs, action, ids)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_adam_moments_of_two_separate_critics_load_stacked():
    q1, q2 = twins("onehot")
    separate, stacked = TwinQ(copy.deepcopy(q1), copy.deepcopy(q2)), StackedTwinQ(q1, q2, True)
    optims = [make_adam(net.parameters(), 1e-3, (0.9, 0.999), torch.device("cpu")) for net in (separate, stacked)]
    obs, action, ids = torch.randn(16, OBS), torch.randn(16, ACT), torch.randint(0, K, (16,))
    for _ in range(2):
        for net, optim in zip((separate, stacked), optims):
            a, b = net(obs, action, ids)
            params = list(net.parameters())
            adam_step(optim, params, list(torch.autograd.grad((a - 1).pow(2).sum() + b.sum(), params)))
    converted = stacked_adam_state(optims[0].state_dict(), len(stacked.weights))
    mine = optims[1].state_dict()
    assert converted["param_groups"][0]["params"] == mine["param_groups"][0]["params"]
    for index, entry in mine["state"].items():
        for key, value in entry.items():
            torch.testing.assert_close(converted["state"][index][key], value, rtol=1e-5, atol=1e-7)


def test_sac_uses_the_stacked_critic_for_plain_mlp_encoders_only():
    def agent(encoder, **kw):
        return SACAgent(OBS, ACT, [f"t{i}" for i in range(K)], SACConfig(hidden_sizes=[16], **kw), {"name": encoder},
                        torch.device("cpu"))  # fmt: skip

    assert isinstance(agent("onehot").critic, StackedTwinQ) and isinstance(agent("none").critic, StackedTwinQ)
    assert isinstance(agent("multihead").critic, TwinQ)
    assert isinstance(agent("onehot", backbone="bronet").critic, TwinQ)
    sac = agent("onehot")
    sac.update(_replay().sample(np.full(K, 8)))
    clone = agent("onehot")
    clone.load_state_dict(sac.state_dict())
    for a, b in zip(clone.critic.parameters(), sac.critic.parameters()):
        assert torch.equal(a, b)
