"""Multi-task SAC: loss shapes, parameter updates, the tanh-Gaussian log-probability, targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtrl.agents import SACAgent, SACConfig
from mtrl.balancers.objective import UpdatePlan
from mtrl.errors import UserError
from mtrl.train.replay import MultiTaskReplay

K, OBS, ACT = 3, 39, 4


def _agent(**kw) -> SACAgent:
    torch.manual_seed(0)
    return SACAgent(
        OBS,
        ACT,
        [f"t{i}" for i in range(K)],
        SACConfig(hidden_sizes=[64, 64], **kw),
        {"name": "onehot"},
        torch.device("cpu"),
    )


def _batch(per_task=16):
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


def test_update_returns_per_task_vectors_and_changes_parameters():
    agent = _agent()
    before = [p.clone() for p in [*agent.actor.parameters(), *agent.critic.parameters()]]
    target_before = [p.clone() for p in agent.critic_target.parameters()]
    metrics = agent.update(_batch())
    for name in ("critic_loss", "actor_loss", "alpha_loss", "alpha", "entropy"):
        assert metrics[name].shape == (K,) and torch.isfinite(metrics[name]).all()
    after = [*agent.actor.parameters(), *agent.critic.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    # Polyak: target moved by exactly tau towards the new critic.
    for old, new, online in zip(target_before, agent.critic_target.parameters(), agent.critic.parameters()):
        torch.testing.assert_close(new, old + 0.005 * (online - old))
    assert (metrics["alpha"] != 1.0).all()


@pytest.mark.parametrize("compiled", [False, True])
def test_acting_follows_task_ids_and_observations_changed_in_place_in_dtype_or_in_shape(compiled):
    """The acting policy's cached task ids, reused observation buffer and (compiled) cached graph key are refreshed
    whenever the caller's arrays change (in place, shape or dtype): its actions always equal the network's mode."""
    agent = _agent()
    if compiled:
        agent.compile("default", backend="aot_eager")
    obs = np.random.default_rng(0).normal(size=(K, OBS)).astype(np.float32)
    ids = np.arange(K)

    def check(task_ids, observations=None):
        observations = obs if observations is None else observations
        rows = torch.as_tensor(observations[: len(task_ids)], dtype=torch.float32)
        with torch.no_grad():
            want = agent.policy.mode(None, rows, torch.as_tensor(task_ids, dtype=torch.long)).numpy()
        got = agent.act(observations[: len(task_ids)], np.asarray(task_ids), deterministic=True)
        np.testing.assert_allclose(got, want, atol=1e-6)

    check(ids)
    ids[0] = 2  # in place: same object, new values
    check(ids)
    check(np.array([1, 0, 0], dtype=np.int32))
    check(ids[:2])
    obs[1] += 1.0  # the observations in place
    check(ids)
    check(ids, obs.astype(np.float64))  # another dtype, copied into the float32 buffer
    check(ids[:1], obs[:1] * 2.0)  # another shape: a new buffer (and graph)
    check(ids)


@pytest.mark.parametrize("counts", [[16, 16, 16], [10, 0, 22]])
def test_temperature_losses_use_the_actor_before_its_step(counts):
    agent = _agent()
    agent.plan_updates(UpdatePlan(equal_counts=len(set(counts)) == 1))
    replay_batch = _batch(per_task=22)
    rows = torch.cat([torch.arange(n) + 22 * k for k, n in enumerate(counts)])
    batch = type(replay_batch)(
        **{
            name: getattr(replay_batch, name)[rows]
            for name in ("obs", "action", "reward", "next_obs", "terminated", "task_ids")
        },
        counts=torch.tensor(counts),
    )
    actor_before = {k: v.detach().clone() for k, v in agent.actor.named_parameters()}
    log_alpha_before = agent.log_alpha.detach().clone()
    seen = {}
    make_inputs = agent.actor_inputs
    agent.actor_inputs = lambda b: seen.setdefault("inputs", make_inputs(b))
    metrics = agent.update(batch)
    inputs = seen["inputs"]
    _, log_prob = agent.sample_action(actor_before, inputs["obs"], inputs["task_ids"], inputs["noise"])
    mean_log_prob = torch.stack(
        [log_prob[batch.task_ids == k].mean() if n else torch.tensor(0.0) for k, n in enumerate(counts)]
    )
    present = torch.tensor([n > 0 for n in counts], dtype=torch.float32)
    expected = -log_alpha_before * (mean_log_prob + agent.target_entropy) * present
    torch.testing.assert_close(metrics["alpha_loss"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["entropy"], -mean_log_prob, rtol=1e-5, atol=1e-6)


def test_critic_loss_falls_on_a_fixed_batch():
    agent = _agent(critic_lr=1e-3)
    batch = _batch()
    first = agent.update(batch)["critic_loss"].mean()
    for _ in range(60):
        last = agent.update(batch)["critic_loss"].mean()
    assert last < 0.5 * first


def test_log_prob_matches_torch_distributions():
    agent = _agent()
    obs = torch.randn(10, OBS)
    tasks = torch.arange(10) % K
    noise = torch.randn(10, ACT)
    action, log_prob = agent.sample_action(None, obs, tasks, noise)
    mean, log_std = agent.policy.distribution(None, obs, tasks)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()]
    )
    torch.testing.assert_close(log_prob, dist.log_prob(action).sum(-1), atol=1e-3, rtol=1e-4)
    assert action.abs().max() < 1


def test_uniform_balancer_is_the_mean_of_task_losses():
    agent = _agent()
    batch = _batch().to("cpu")
    target = agent.critic_targets(batch)
    params = dict(agent.critic.named_parameters())
    inputs = {"obs": batch.obs, "action": batch.action, "task_ids": batch.task_ids, "target": target}
    losses, aux = agent.critic_objective.backward(agent.critic_sample_loss, inputs, batch.counts)
    assert losses.shape == (K,) and aux == {}
    got = [p.grad.clone() for p in params.values()]
    agent.critic.zero_grad()
    agent.critic_sample_loss(params, **inputs).mean().backward()  # equal chunks: mean of means = mean
    for g, p in zip(got, params.values()):
        torch.testing.assert_close(g, p.grad)


def test_terminal_transitions_do_not_bootstrap():
    agent = _agent()
    batch = _batch()
    batch.terminated[:] = 1.0
    torch.testing.assert_close(agent.critic_targets(batch), batch.reward)


@pytest.mark.parametrize("key,value", [("gamma", 1.5), ("tau", 0.0), ("actor_lr", -1.0)])
def test_bad_hyperparameters_are_rejected(key, value):
    with pytest.raises(UserError, match=f"agent.{key}={value}"):
        SACConfig(**{key: value})
