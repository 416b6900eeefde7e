"""The options that let the reference presets repeat their sources (docs/presets.md), each on its own, against
the source's formula: initialisation, Adam epsilon, critic-loss scale, temperature sharing and loss form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtrl.agents import SACAgent, SACConfig
from mtrl.agents.acting import HEAD_BOUNDS, initialise, linear_layers
from mtrl.agents.optim import adam_step, make_adam
from mtrl.agents.sac import temperature_loss
from mtrl.errors import UserError
from mtrl.networks import make_network
from mtrl.train.replay import MultiTaskReplay

K, OBS, ACT = 3, 39, 4


def agent(**options) -> SACAgent:
    torch.manual_seed(0)
    config = SACConfig(hidden_sizes=[64, 64], **options)
    return SACAgent(OBS, ACT, [f"t{i}" for i in range(K)], config, {"name": "onehot"}, torch.device("cpu"))


def batch(per_task: int = 16):
    rng = np.random.default_rng(0)
    replay = MultiTaskReplay(K, 100, OBS, ACT, seed=0)
    for _ in range(50):
        replay.add(
            np.arange(K),
            rng.normal(size=(K, OBS)),
            rng.uniform(-1, 1, (K, ACT)),
            rng.uniform(0, 1, K),
            rng.normal(size=(K, OBS)),
            np.zeros(K),
        )
    return replay.sample(np.full(K, per_task))


# ----- agent.init=he_uniform (Meta-World+ cfg/nn.py:15,19; rl/networks.py:34-40,226-228) ---------------------
@pytest.mark.parametrize("encoder", ["onehot", "multihead"])
@pytest.mark.parametrize("role", ["actor", "critic"])
def test_he_uniform_hidden_weights_zero_biases_small_output_layer(encoder, role):
    torch.manual_seed(0)
    net = make_network(encoder, OBS, 8, K, [256, 256])
    initialise(net, "he_uniform", HEAD_BOUNDS[role])
    *hidden, (head_w, head_b) = linear_layers(net)
    for weight, bias in hidden:
        bound = math.sqrt(6.0 / weight.shape[-1])  # jax he_uniform: variance 2 / fan_in, uniform
        assert weight.abs().max() <= bound
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3.0), rel=0.05)
        assert torch.count_nonzero(bias) == 0
    head = HEAD_BOUNDS[role]
    assert head_w.abs().max() <= head and head_b.abs().max() <= head
    assert head_w.std().item() == pytest.approx(head / math.sqrt(3.0), rel=0.1)
    assert torch.count_nonzero(head_b) == head_b.numel()  # the source draws the bias too (uniform(3e-3))


def test_agent_builds_its_networks_with_their_roles_output_ranges():
    sac = agent(init="he_uniform")
    assert linear_layers(sac.actor)[-1][0].abs().max() <= 1e-3
    for q in (sac.critic.q1, sac.critic.q2):
        weight = linear_layers(q)[-1][0]
        assert 1e-3 < weight.abs().max() <= 3e-3


# ----- agent.adam_eps (Meta-World+ cfg/optim.py:25-27) ----------------------------------------------------------
def test_adam_eps_reaches_every_optimiser_and_enters_the_step_as_optax_does():
    sac = agent(adam_eps=1e-5)
    for optim in (sac.actor_optim, sac.critic_optim, sac.alpha_optim):
        assert optim.param_groups[0]["eps"] == 1e-5
    p = torch.zeros(3, requires_grad=True)
    optim = make_adam([p], 0.1, (0.9, 0.999), torch.device("cpu"), eps=1e-5)
    g = torch.tensor([1e-5, -2e-5, 0.0])
    adam_step(optim, [p], [g])
    m_hat, v_hat = g, g * g  # after one step the bias corrections cancel the (1 - beta) factors
    torch.testing.assert_close(p.detach(), -0.1 * m_hat / (v_hat.sqrt() + 1e-5))


def test_bad_adam_eps_is_one_line():
    with pytest.raises(UserError, match=r"agent\.adam_eps.*> 0"):
        SACConfig(adam_eps=0.0)


# ----- agent.critic_loss (Meta-World+ mtsac.py:300-302) ---------------------------------------------------------
def test_critic_loss_mean_is_half_the_sum_and_the_mean_over_critics_and_rows():
    data = batch()
    summed, averaged = agent(critic_loss="sum"), agent(critic_loss="mean")
    torch.manual_seed(1)
    inputs = summed.critic_inputs(data)
    sum_loss = summed.critic_sample_loss(None, **inputs)
    mean_loss = averaged.critic_sample_loss(None, **inputs)
    torch.testing.assert_close(mean_loss, sum_loss / 2)
    q1, q2 = averaged.critic(inputs["obs"], inputs["action"], inputs["task_ids"])
    source = (torch.stack([q1, q2]) - inputs["target"]).pow(2).mean()  # the source's scalar
    torch.testing.assert_close(mean_loss.mean(), source)


def test_bad_critic_loss_is_one_line():
    with pytest.raises(UserError, match=r"agent\.critic_loss.*sum, mean"):
        SACConfig(critic_loss="max")


# ----- agent.shared_alpha and agent.alpha_loss (facebookresearch/mtrl sac.py:145-157, 417-420) ------------------
def test_temperature_loss_forms_match_their_sources():
    log_alpha, log_prob, h = torch.tensor([0.3]), torch.tensor([-1.5, 2.0]), -4.0
    torch.testing.assert_close(temperature_loss(log_alpha, log_prob, h, "log_alpha"), -0.3 * (log_prob + h))
    torch.testing.assert_close(temperature_loss(log_alpha, log_prob, h, "alpha"), math.exp(0.3) * (-log_prob - h))
    # The alpha form's gradient in log alpha is alpha times the log_alpha form's.
    grads = []
    for form in ("log_alpha", "alpha"):
        x = log_alpha.clone().requires_grad_(True)
        temperature_loss(x, log_prob, h, form).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[1], math.exp(0.3) * grads[0])


def test_shared_alpha_is_one_temperature_moved_by_the_mean_task_loss():
    shared = agent(shared_alpha=True, alpha_loss="alpha")
    assert shared.log_alpha.shape == (1,)
    metrics = shared.update(batch())
    assert metrics["alpha"].shape == (K,) and torch.unique(metrics["alpha"]).numel() == 1
    # One Adam step from log alpha = 0 moves it by -lr * sign(gradient); the gradient is the mean over tasks of
    # alpha (-log pi - H) differentiated in log alpha.
    entropy = metrics["entropy"]  # -mean log pi per task
    gradient = (entropy - shared.target_entropy).mean()
    expected = -shared.config.alpha_lr * torch.sign(gradient)
    torch.testing.assert_close(shared.log_alpha.detach(), expected.reshape(1), rtol=1e-4, atol=1e-7)


def test_resuming_with_another_temperature_count_is_one_line():
    state = agent(shared_alpha=True).state_dict()
    with pytest.raises(UserError, match=r"1 temperature\(s\), this config 3.*agent\.shared_alpha"):
        agent().load_state_dict(state)


def test_bad_alpha_loss_and_shared_alpha_are_one_line():
    with pytest.raises(UserError, match=r"agent\.alpha_loss.*log_alpha, alpha"):
        SACConfig(alpha_loss="exp")
    with pytest.raises(UserError, match=r"agent\.shared_alpha"):
        SACConfig(shared_alpha="yes")
