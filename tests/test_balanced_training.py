"""Balancers and encoders inside multi-task SAC: per-task gradients, every combination, smoke runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtrl import balancers
from mtrl.agents import SACAgent, SACConfig
from mtrl.agents.factory import build_balancers
from mtrl.balancers.objective import UpdatePlan
from mtrl.batch import map_task_chunks, task_mean
from mtrl.config import BalancerConfig
from mtrl.errors import UserError
from mtrl.networks import available as encoders
from mtrl.train.replay import MultiTaskReplay
from mtrl.train.trainer import Trainer
from tests.conftest import smoke_run_config

K, OBS, ACT = 3, 39, 4
TASKS = ["reach-v3", "push-v3", "drawer-close-v3"]


def _replay(seed=0):
    rng = np.random.default_rng(seed)
    replay = MultiTaskReplay(K, 64, OBS, ACT, seed=seed)
    for _ in range(64):
        replay.add(
            np.arange(K),
            rng.normal(size=(K, OBS)),
            rng.uniform(-1, 1, (K, ACT)),
            rng.uniform(size=K),
            rng.normal(size=(K, OBS)),
            np.zeros(K),
        )
    return replay


def _agent(encoder="onehot", balancer="uniform", **options):
    torch.manual_seed(0)
    agent = SACAgent(OBS, ACT, TASKS, SACConfig(hidden_sizes=[32, 32]), {"name": encoder}, torch.device("cpu"))
    agent.set_balancers(balancers.make(balancer, K, **options), balancers.make(balancer, K, **options))
    return agent


@pytest.mark.parametrize("counts", [[8, 8, 8], [5, 11, 8], [6, 10, 0], [0, 9, 7]])
def test_vectorised_per_task_gradients_equal_k_backward(counts):
    agent = _agent("multihead")
    batch = _replay().sample(np.array(counts))
    inputs = {
        "obs": batch.obs,
        "action": batch.action,
        "task_ids": batch.task_ids,
        "target": agent.critic_targets(batch),
    }
    G, (losses, _) = agent.critic_objective.per_task_gradients(agent.critic_sample_loss, inputs, batch.counts)
    params = list(agent.critic_objective.parameters().values())
    reference_losses = task_mean(
        agent.critic_sample_loss(dict(agent.critic.named_parameters()), **inputs), batch.task_ids, K
    )
    reference = balancers.per_task_gradients_loop(reference_losses, params)
    torch.testing.assert_close(losses, reference_losses.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(G, reference, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("counts", [[8, 8, 8], [5, 11, 0]])
@pytest.mark.parametrize("encoder", ["onehot", "task_bottom", "film"])
def test_chunk_by_chunk_evaluation_equals_the_mixed_batch(encoder, counts):
    agent = _agent(encoder)
    agent.plan_updates(UpdatePlan(equal_counts=len(set(counts)) == 1))
    batch = _replay().sample(np.array(counts))
    inputs = agent.critic_inputs(batch)
    objective = agent.critic_objective
    direct = task_mean(agent.critic_sample_loss(objective.parameters(), **inputs), batch.task_ids, K)
    chunked, _ = objective.task_losses(agent.critic_sample_loss, inputs, batch.counts)
    torch.testing.assert_close(chunked, direct, rtol=1e-5, atol=1e-6)
    rows = map_task_chunks(agent.actor, {"x": batch.obs, "task_ids": batch.task_ids}, batch.counts)
    torch.testing.assert_close(rows, agent.actor(batch.obs, batch.task_ids), rtol=1e-5, atol=1e-6)


def test_gradient_balancer_writes_its_direction_on_shared_parameters():
    agent = _agent("multihead", "pcgrad", seed=0)
    batch = _replay().sample(np.full(K, 8))
    inputs = {
        "obs": batch.obs,
        "action": batch.action,
        "task_ids": batch.task_ids,
        "target": agent.critic_targets(batch),
    }
    G, _ = agent.critic_objective.per_task_gradients(agent.critic_sample_loss, inputs, batch.counts)
    shared = agent.critic_objective.num_shared
    assert 0 < shared < G.shape[1]
    expected, _ = balancers.make("pcgrad", K, seed=0).combine(G[:, :shared])
    agent.critic_objective.backward(agent.critic_sample_loss, inputs, batch.counts)
    written = balancers.flatten(p.grad for p in agent.critic_objective.parameters().values())
    torch.testing.assert_close(written[:shared], expected)
    # Per-task heads get their mean-loss gradient: task slices never conflict.
    torch.testing.assert_close(written[shared:], G[:, shared:].mean(0))


@pytest.mark.parametrize("balancer", balancers.available())
@pytest.mark.parametrize("encoder", encoders())
def test_every_encoder_updates_with_every_balancer(encoder, balancer):
    agent = _agent(encoder, balancer)
    before = [p.clone() for p in agent.critic.parameters()]
    replay = _replay()
    for _ in range(2):
        metrics = agent.update(replay.sample(np.full(K, 8)))
    assert all(torch.isfinite(v).all() for v in metrics.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.critic.parameters()))


def test_famo_logits_move_after_updates_and_survive_checkpoints():
    agent = _agent("onehot", "famo")
    replay = _replay()
    for _ in range(3):
        agent.update(replay.sample(np.full(K, 8)))
    state = agent.state_dict()
    assert not torch.allclose(torch.as_tensor(state["critic_balancer"]["logits"]), torch.zeros(K, dtype=torch.float64))
    clone = _agent("onehot", "famo")
    clone.load_state_dict(state)
    assert clone.critic_objective.balancer.state_dict().keys() == state["critic_balancer"].keys()


def test_balancer_config_errors():
    with pytest.raises(UserError, match="balancer='nope'"):
        BalancerConfig("nope")
    with pytest.raises(UserError, match="balancer.apply_to='encoder'"):
        BalancerConfig("pcgrad", ["encoder"])
    with pytest.raises(UserError, match="balancer.c"):
        BalancerConfig("pcgrad", options={"c": 0.4})
    chosen = build_balancers(BalancerConfig("famo", ["critic"]), _agent())
    assert chosen["critic"].name == "famo" and chosen["actor"].name == "uniform"


@pytest.mark.parametrize("balancer", balancers.available())
def test_smoke_run_with_each_balancer_logs_weights(tmp_path, balancer):
    run_dir = tmp_path / balancer
    Trainer(
        smoke_run_config(
            run_dir,
            f"balancer={balancer}",
            "total_steps=300",
            "warmup_steps=100",
            "log_every=100",
            "checkpoint_every=0",
        ),
        run_dir,
    ).run()
    tags = EventAccumulator(str(run_dir / "tb")).Reload().Tags()["scalars"]
    assert "balancer/critic/weight/reach-v3" in tags
    assert "balancer/critic/conflict_fraction" in tags and "balancer/actor/mean_cosine" in tags


@pytest.mark.parametrize(("every", "measured"), [(0, []), (200, [100, 300]), (1, [100, 200, 300])])
def test_gradient_conflict_is_measured_at_its_own_cadence(tmp_path, every, measured):
    """`diagnostics.conflict_every` picks the log steps with a conflict pass (the first, then one per period);
    task weights are logged at every log step regardless."""
    run_dir = tmp_path / str(every)
    overrides = ("total_steps=300", "warmup_steps=0", "log_every=100", "checkpoint_every=0", "eval_every=0")
    Trainer(smoke_run_config(run_dir, f"diagnostics.conflict_every={every}", *overrides), run_dir).run()
    events = EventAccumulator(str(run_dir / "tb")).Reload()
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert steps["balancer/critic/weight/reach-v3"] == [100, 200, 300]
    assert steps.get("balancer/critic/mean_cosine", []) == measured
    assert steps.get("balancer/actor/conflict_fraction", []) == measured


@pytest.mark.slow
@pytest.mark.parametrize("balancer", balancers.available())
@pytest.mark.parametrize("encoder", encoders())
def test_every_encoder_trains_end_to_end_with_every_balancer(tmp_path, encoder, balancer):
    run_dir = tmp_path / "run"
    result = Trainer(
        smoke_run_config(
            run_dir,
            f"encoder={encoder}",
            f"balancer={balancer}",
            "total_steps=300",
            "warmup_steps=100",
            "checkpoint_every=0",
        ),
        run_dir,
    ).run()
    assert [t.task for t in result.tasks] == ["reach-v3", "drawer-close-v3"]
