"""Multi-task CQL: the conservative penalty per sample, purity under the balancers' vmap path, updates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtrl import balancers
from mtrl.agents.cql import CQLAgent, CQLConfig
from mtrl.agents.sac import SACConfig
from mtrl.balancers.objective import UpdatePlan
from mtrl.batch import Batch, task_mean
from mtrl.errors import UserError

K, OBS, ACT, N = 3, 7, 4, 5


def _agent(encoder="onehot", **cql) -> CQLAgent:
    torch.manual_seed(0)
    options = {f"cql_{k}" if k in ("alpha", "temperature", "lagrange", "target_gap") else k: v for k, v in cql.items()}
    agent = CQLAgent(
        OBS,
        ACT,
        [f"t{i}" for i in range(K)],
        CQLConfig(hidden_sizes=[32, 32], cql_num_actions=N, **options),
        {"name": encoder},
        torch.device("cpu"),
    )
    agent.plan_updates(UpdatePlan(equal_counts=False))  # CDS-like batches: unequal rows per task
    return agent


def _batch(counts=(6, 2, 9)) -> Batch:
    """A task-by-task batch with unequal rows per task, as CDS produces."""
    g = torch.Generator().manual_seed(1)
    n = sum(counts)
    return Batch(
        obs=torch.randn(n, OBS, generator=g),
        action=torch.rand(n, ACT, generator=g) * 2 - 1,
        reward=torch.rand(n, generator=g),
        next_obs=torch.randn(n, OBS, generator=g),
        terminated=torch.zeros(n),
        task_ids=torch.repeat_interleave(torch.arange(K), torch.tensor(counts)),
        counts=torch.tensor(counts),
    )


def test_sampled_actions_and_densities():
    agent, batch = _agent(), _batch()
    actions, log_density = agent.cql_actions(batch)
    assert actions.shape == (len(batch), 3 * N, ACT) and log_density.shape == (len(batch), 3 * N)
    assert actions.abs().max() <= 1.0 and torch.isfinite(log_density).all()
    torch.testing.assert_close(log_density[:, :N], torch.full((len(batch), N), -ACT * math.log(2.0)))
    # The policy's samples at s are paired with their own observation, task and log-probability.
    obs, ids = batch.obs.repeat_interleave(N, 0), batch.task_ids.repeat_interleave(N)
    with torch.no_grad():
        density = agent.action_log_prob(None, obs, ids, actions[:, N : 2 * N].reshape(-1, ACT))
    torch.testing.assert_close(density, log_density[:, N : 2 * N].reshape(-1), rtol=1e-3, atol=1e-3)


def test_penalty_matches_a_per_sample_loop():
    agent, batch = _agent(alpha=2.5, temperature=0.7), _batch()
    inputs = agent.critic_inputs(batch)
    params = dict(agent.critic.named_parameters())
    loss, aux = agent.critic_sample_loss(params, **inputs)
    expected = []
    with torch.no_grad():
        for b in range(len(batch)):
            obs, act, tid = batch.obs[b : b + 1], batch.action[b : b + 1], batch.task_ids[b : b + 1]
            q1, q2 = agent.critic(obs, act, tid)
            y = inputs["target"][b]
            value = (q1 - y) ** 2 + (q2 - y) ** 2
            s1, s2 = agent.critic(obs.expand(3 * N, OBS), inputs["cql_actions"][b], tid.expand(3 * N))
            for s, q in ((s1, q1), (s2, q2)):
                scores = (s - inputs["cql_log_density"][b]) / 0.7
                value = value + 2.5 * (0.7 * torch.log(torch.exp(scores).sum()) - q)
            expected.append(value)
    torch.testing.assert_close(loss.detach(), torch.cat(expected), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the penalty it reports is the one it adds
        q1, q2 = agent.critic(batch.obs, batch.action, batch.task_ids)
        td = (q1 - inputs["target"]) ** 2 + (q2 - inputs["target"]) ** 2
    torch.testing.assert_close(aux["penalty"].detach(), (loss.detach() - td) / 2.5, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("encoder", ["onehot", "multihead"])
def test_vmap_path_gives_the_same_task_losses_and_gradients(encoder):
    agent, batch = _agent(encoder), _batch()
    inputs = agent.critic_inputs(batch)
    agent.set_balancers(balancers.make("pcgrad", K), balancers.make("uniform", K))
    G, (losses, _) = agent.critic_objective.per_task_gradients(agent.critic_sample_loss, inputs, batch.counts)
    params = agent.critic_objective.parameters()
    direct = task_mean(agent.critic_sample_loss(params, **inputs)[0], batch.task_ids, K)
    torch.testing.assert_close(losses, direct.detach(), rtol=1e-5, atol=1e-5)
    for task in range(K):  # row `task` of G is the gradient of that task's mean loss
        grads = torch.autograd.grad(direct[task], list(params.values()), retain_graph=True, allow_unused=True)
        flat = torch.cat(
            [(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params.values())]
        )
        torch.testing.assert_close(G[task], flat, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("balancer", ["uniform", "pcgrad", "famo"])
def test_update_with_unequal_task_counts(balancer):
    agent = _agent()
    agent.set_balancers(balancers.make(balancer, K), balancers.make(balancer, K))
    before = [p.clone() for p in agent.critic.parameters()]
    metrics = agent.update(_batch())
    assert metrics["critic_loss"].shape == (K,) and torch.isfinite(metrics["critic_loss"]).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.critic.parameters()))
    assert metrics["penalty"].shape == (K,) and torch.isfinite(metrics["penalty"]).all()


def test_penalty_pushes_down_unseen_actions():
    """With a large weight, Q of out-of-data actions falls below Q of the data's actions."""
    agent, batch = _agent(alpha=5.0), _batch((16, 16, 16))
    for _ in range(150):
        agent.update(batch)
    with torch.no_grad():
        q_data = agent.task_q(batch.obs, batch.action, batch.task_ids).mean()
        q_rand = agent.task_q(batch.obs, torch.rand_like(batch.action) * 2 - 1, batch.task_ids).mean()
    assert q_data > q_rand


def test_zero_weight_is_plain_sac_critic_loss():
    agent, batch = _agent(alpha=0.0), _batch()
    inputs = agent.critic_inputs(batch)
    params = dict(agent.critic.named_parameters())
    q1, q2 = agent.critic(batch.obs, batch.action, batch.task_ids)
    want = (q1 - inputs["target"]) ** 2 + (q2 - inputs["target"]) ** 2
    torch.testing.assert_close(agent.critic_sample_loss(params, **inputs)[0], want)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"cql_alpha": -1.0}, "agent.cql_alpha=-1.0"),
        ({"cql_num_actions": 0}, "agent.cql_num_actions=0"),
        ({"cql_temperature": 0.0}, "agent.cql_temperature=0.0"),
        ({"cql_target_gap": float("nan")}, "agent.cql_target_gap=nan"),
        ({"cql_lagrange": "yes"}, "agent.cql_lagrange='yes'"),
        ({"deterministic_backup": 1}, "agent.deterministic_backup=1"),
    ],
)
def test_bad_cql_options(kwargs, message):
    with pytest.raises(UserError, match=message):
        CQLConfig(**kwargs)


def test_state_dict_loads_into_a_plain_sac_agent():
    from mtrl.agents import SACAgent

    agent = _agent()
    sac = SACAgent(
        OBS, ACT, [f"t{i}" for i in range(K)], SACConfig(hidden_sizes=[32, 32]), {"name": "onehot"}, torch.device("cpu")
    )
    sac.load_state_dict(agent.state_dict(), networks_only=True)
    obs = np.random.default_rng(0).normal(size=(K, OBS)).astype(np.float32)
    np.testing.assert_array_equal(sac.act(obs, np.arange(K), True), agent.act(obs, np.arange(K), True))


def test_behaviour_cloning_phase():
    from torch.distributions import Normal, TransformedDistribution
    from torch.distributions.transforms import TanhTransform

    agent, batch = _agent(bc_updates=2), _batch()
    # log pi(a|s) of given actions matches torch's tanh-transformed Gaussian.
    mean, log_std = agent.policy.distribution(None, batch.obs, batch.task_ids)
    dist = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()])
    action = batch.action.clamp(-0.99, 0.99)
    torch.testing.assert_close(
        agent.action_log_prob(None, batch.obs, batch.task_ids, action),
        dist.log_prob(action).sum(-1),
        rtol=1e-4,
        atol=1e-4,
    )
    assert "bc_action" in agent.actor_inputs(batch)
    agent.set_balancers(balancers.make("pcgrad", K), balancers.make("pcgrad", K))  # vmap path with bc_action
    agent.update(batch)
    agent.update(batch)
    assert agent.num_updates == 2 and "bc_action" not in agent.actor_inputs(batch)
    restored = _agent(bc_updates=2)
    restored.set_balancers(balancers.make("pcgrad", K), balancers.make("pcgrad", K))
    restored.load_state_dict(agent.state_dict())
    assert restored.num_updates == 2


@pytest.mark.parametrize("gap,direction", [(1e4, -1), (-1e4, 1)])
def test_lagrange_weight_stays_positive_and_moves_towards_the_target_gap(gap, direction):
    """alpha' falls while the penalty is below the target gap and rises while it is above; it stays >= 0."""
    agent, batch = _agent(alpha=1.0, lagrange=True, target_gap=gap), _batch()
    weights = [agent.penalty_weight().clone()]
    for _ in range(5):
        metrics = agent.update(batch)
        weights.append(metrics["penalty_weight"].clone())
    steps = torch.stack(weights).diff(dim=0)
    assert (torch.stack(weights) >= 0).all()
    assert (torch.sign(steps) == direction).all(), steps


def test_deterministic_backup_drops_the_entropy_term():
    agent, batch = _agent(deterministic_backup=True), _batch()
    torch.manual_seed(3)
    low = agent.critic_targets(batch)
    with torch.no_grad():
        agent.log_alpha.fill_(5.0)  # a huge temperature changes SAC's targets, not these
    torch.manual_seed(3)
    torch.testing.assert_close(agent.critic_targets(batch), low)
    sac = _agent(deterministic_backup=False)
    torch.manual_seed(3)
    with_entropy = sac.critic_targets(batch)
    with torch.no_grad():
        sac.log_alpha.fill_(5.0)
    torch.manual_seed(3)
    assert not torch.allclose(sac.critic_targets(batch), with_entropy)
