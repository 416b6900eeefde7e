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
from mtrl.batch import Batch
from mtrl.errors import UserError
from mtrl.networks import make_network
from tests.test_sac import _batch as batch

K, OBS, ACT = 3, 39, 4


def agent(**options) -> SACAgent:
    torch.manual_seed(0)
    config = SACConfig(hidden_sizes=[64, 64], **options)
    return SACAgent(OBS, ACT, [f"t{i}" for i in range(K)], config, {"name": "onehot"}, torch.device("cpu"))


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


# ----- balancer.apply_to with alpha (facebookresearch/mtrl sac.py:430-436 through _compute_gradient) ---------------
def shared_alpha_config(balancer: str, *extra: str):
    from mtrl.config.parse import parse_train
    from tests.conftest import smoke_config

    return parse_train(
        smoke_config(
            "/tmp/unused",
            f"balancer={balancer}",
            "agent.shared_alpha=true",
            "balancer.apply_to=[critic,actor,alpha]",
            *extra,
        )
    )


@pytest.mark.parametrize("balancer", ["pcgrad", "cagrad", "uniform"])
def test_a_balancer_combines_the_shared_temperatures_task_gradients(balancer):
    from mtrl.agents.factory import construct_agent

    config = shared_alpha_config(balancer)
    sac = construct_agent(config, ["reach-v3", "drawer-close-v3", "push-v3"], OBS, ACT, torch.device("cpu"))
    assert sac.objectives["alpha"].balancer.name == balancer
    before = sac.log_alpha.detach().clone()
    metrics = sac.update(batch())
    assert metrics["alpha_loss"].shape == (K,) and not torch.equal(sac.log_alpha.detach(), before)
    assert "alpha_balancer" in sac.state_dict()


def test_pcgrad_on_the_shared_temperature_is_the_projected_mean_of_the_task_gradients():
    """A scalar parameter: task gradients of opposite sign conflict, PCGrad projects each onto the other's normal
    (to 0), so the step is zero; same signs pass as the mean."""
    from mtrl.balancers import make

    pcgrad = make("pcgrad", 2)
    opposite = torch.tensor([[1.0], [-0.5]])
    direction, _ = pcgrad.combine(opposite, torch.ones(2))
    torch.testing.assert_close(direction, torch.zeros(1), atol=1e-6, rtol=0)
    same = torch.tensor([[1.0], [0.5]])
    torch.testing.assert_close(pcgrad.combine(same, torch.ones(2))[0], torch.tensor([0.75]))


def test_alpha_in_apply_to_needs_a_shared_temperature_and_an_agent_that_has_one():
    from mtrl.agents.factory import construct_agent
    from mtrl.config.parse import parse_train
    from tests.conftest import smoke_config

    per_task = parse_train(smoke_config("/tmp/unused", "balancer=pcgrad", "balancer.apply_to=[critic,alpha]"))
    with pytest.raises(UserError, match=r"includes alpha, which needs agent\.shared_alpha=true"):
        construct_agent(per_task, ["a", "b"], OBS, ACT, torch.device("cpu"))
    famo = shared_alpha_config("famo", "balancer.apply_to=[critic,alpha]")
    with pytest.raises(UserError, match=r"balancer=famo needs positive task losses.*alpha loss can be negative"):
        construct_agent(famo, ["a", "b"], OBS, ACT, torch.device("cpu"))
    with pytest.raises(UserError, match=r"balancer\.apply_to='temperature'.*critic, actor, alpha"):
        parse_train(smoke_config("/tmp/unused", "balancer=pcgrad", "balancer.apply_to=[critic,temperature]"))


# ----- env.reward_version=v1 (Meta-World v1 rewards, e.g. sawyer_reach_push_pick_place.py's reach) ----------------
def test_reward_version_v1_is_the_v1_reach_reward():
    from envs.goals import make_goals
    from envs.single import make_task_env

    goals = make_goals("mt1-reach-v3", ["reach-v3"], 0)["reach-v3"][:1]
    rewards = {}
    for version in ("v2", "v1"):
        env = make_task_env("reach-v3", goals, "fixed", 20, seed=0, reward_version=version)
        env.reset(seed=0)
        mw, rows = env.unwrapped, []
        for _ in range(15):  # move the hand towards the goal, where the v1 reward grows into the thousands
            _, reward, *_ = env.step(np.append(np.clip(10 * (mw._target_pos - mw.tcp_center), -1, 1), 0.0))
            fingers = (mw._get_site_pos("rightEndEffector") + mw._get_site_pos("leftEndEffector")) / 2
            d = float(np.linalg.norm(fingers - mw._target_pos))
            v1 = max(1000 * (mw.maxReachDist - d) + 1000 * (math.exp(-(d**2) / 0.01) + math.exp(-(d**2) / 0.001)), 0)
            rows.append((reward, v1))
        rewards[version] = rows
    for reward, v1 in rewards["v1"]:
        assert reward == pytest.approx(v1, rel=1e-9)
    assert all(reward <= 10.0 for reward, _ in rewards["v2"])  # v2 rewards lie in [0, 10]
    assert max(reward for reward, _ in rewards["v1"]) > 100.0


def test_bad_reward_version_and_fixed_goal_are_one_line():
    from envs import build_env_spec

    with pytest.raises(UserError, match=r"env\.reward_version.*v2, v1"):
        build_env_spec({"tasks": ["reach-v3"], "reward_version": "v3"}, seed=0)
    with pytest.raises(UserError, match=r"env\.fixed_goal.*first under env\.protocol=metaworld"):
        build_env_spec({"tasks": ["reach-v3"], "protocol": "metaworld", "fixed_goal": "seeded"}, seed=0)


# ----- env.fixed_goal=seeded (mtenv/envs/metaworld/env.py:102-116: random.choice per task, seeded) ----------------
def test_seeded_fixed_goal_is_mtenvs_draw_from_the_seeded_random():
    import random

    from envs import build_env_spec

    tasks = ["reach-v3", "drawer-close-v3", "push-v3"]
    first = build_env_spec({"tasks": tasks, "protocol": "mtrl", "goal_seed": 3}, seed=3)
    drawn = {}
    for seed in (3, 4):
        spec = build_env_spec({"tasks": tasks, "protocol": "mtrl", "goal_seed": 3, "fixed_goal": "seeded"}, seed=seed)
        drawn[seed] = spec
    rng = random.Random(3)  # the goal seed (= the run seed by default) seeds the draw
    for name in tasks:
        index = rng.choice(range(50))
        assert drawn[3].goals[name][0] == first.goals[name][index]
        assert sorted(map(repr, drawn[3].goals[name])) == sorted(map(repr, first.goals[name]))  # a reordering
    by_seed = [build_env_spec({"tasks": tasks, "protocol": "mtrl", "fixed_goal": "seeded"}, seed=s) for s in (1, 2)]
    assert any(by_seed[0].goals[t][0] != by_seed[1].goals[t][0] for t in tasks)


# ----- batch_sampling=uniform (mtrl replay_buffer.py:72-76), the row mean, the burst, the horizon step -------------
def test_uniform_batch_counts_are_multinomial_over_stored_rows(tmp_path):
    from mtrl.train.trainer import Trainer
    from tests.conftest import smoke_run_config

    trainer = Trainer(smoke_run_config(tmp_path / "run", "batch_sampling=uniform", "batch_size=40"), tmp_path / "run")
    assert not trainer.agent.plan.equal_counts and trainer.agent.plan.row_mean
    trainer.replay.sizes[:] = [300, 100]
    draws = np.array([trainer.batch_counts() for _ in range(400)])
    assert (draws.sum(1) == 40).all() and len({tuple(d) for d in draws}) > 5
    assert draws[:, 0].mean() == pytest.approx(30.0, abs=1.0)  # 40 x 300/400
    trainer.close()


def test_row_mean_plan_makes_the_uniform_loss_the_mean_over_rows():
    from mtrl.balancers.objective import UpdatePlan

    sac = agent()
    sac.plan_updates(UpdatePlan(equal_counts=False, row_mean=True))
    data = batch(per_task=24)
    counts = [5, 20, 23]
    starts = np.cumsum([0, 24, 24])
    rows = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, counts)])
    fields = ("obs", "action", "reward", "next_obs", "terminated", "task_ids")
    uneven = Batch(**{name: getattr(data, name)[rows] for name in fields}, counts=tuple(counts))
    torch.manual_seed(2)
    inputs = sac.critic_inputs(uneven)
    grads, losses, _ = sac.objectives["critic"].gradients(sac.critic_sample_loss, inputs, uneven.counts)
    params = sac.objectives["critic"].parameters()
    row_mean = sac.critic_sample_loss(None, **inputs).mean()
    expected = torch.autograd.grad(row_mean, list(params.values()))
    for (name, _), g in zip(params.items(), expected):
        torch.testing.assert_close(grads[name], g, rtol=1e-5, atol=1e-7)


def test_warmup_burst_runs_its_updates_when_learning_starts(tmp_path):
    from mtrl.train.trainer import Trainer
    from tests.conftest import smoke_run_config

    overrides = ("total_steps=220", "eval_every=0", "checkpoint_every=0", "warmup_burst_updates=7")
    trainer = Trainer(smoke_run_config(tmp_path / "run", *overrides), tmp_path / "run")
    trainer.run()
    # Vector steps of 2 envs: learning starts at step 200 (7 updates), then one per step at 202 ... 218.
    assert trainer.updates == 7 + 9
    with pytest.raises(UserError, match=r"warmup_burst_updates.*>= 0"):
        smoke_run_config(tmp_path / "x", "warmup_burst_updates=-1")


def test_horizon_next_obs_reset_stores_the_reset_observation_at_the_time_limit(tmp_path):
    from envs.vector import StepResult
    from mtrl.train.trainer import Trainer
    from tests.conftest import smoke_run_config

    def step(truncated):
        n = len(truncated)
        return StepResult(
            obs=np.full((n, OBS), 1.0),
            next_obs=np.full((n, OBS), 2.0),
            reward=np.zeros(n, np.float32),
            terminated=np.zeros(n, bool),
            truncated=np.array(truncated),
            success=np.zeros(n, bool),
            task_ids=np.arange(n),
            raw_reward=np.zeros(n),
        )

    for mode, expected in (("final", [2.0, 2.0]), ("reset", [2.0, 1.0])):
        trainer = Trainer(smoke_run_config(tmp_path / mode, f"horizon_next_obs={mode}"), tmp_path / mode)
        stored = trainer.stored_next_obs(step([False, True]))
        assert stored[:, 0].tolist() == expected
        trainer.close()


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (["batch_sampling=pooled"], r"batch_sampling.*per_task, uniform"),
        (["batch_size=1280"], r"batch_size=1280.*null unless batch_sampling=uniform"),
        (["batch_sampling=uniform", "batch_size=0"], r"batch_size.*>= 1"),
        (["batch_sampling=uniform", "curriculum=learning_progress"], r"batch_sampling.*per_task .*curriculum"),
        (["horizon_next_obs=next"], r"horizon_next_obs.*final, reset"),
        (["agent.init=kaiming"], r"agent\.init.*default, xavier, he_uniform"),
    ],
)
def test_bad_values_of_the_new_options_are_one_line(tmp_path, overrides, pattern):
    from tests.conftest import smoke_run_config

    with pytest.raises(UserError, match=pattern) as err:
        smoke_run_config(tmp_path / "x", *overrides)
    assert "\n" not in str(err.value)
