"""BRC (Nauman et al. 2025): BroNet, the categorical critic and its projection, return normalisation, the shared
task embedding, the presets; checked against the authors' definitions (naumix/BiggerRegularizedCategorical)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from mtrl import balancers
from mtrl.agents import SACAgent, SACConfig
from mtrl.agents import categorical as cat
from mtrl.agents.cql import CQLConfig
from mtrl.agents.factory import construct_agent
from mtrl.agents.optim import adam_step
from mtrl.agents.return_norm import ReturnNormalizer, discounted_returns
from mtrl.config.parse import parse_train
from mtrl.errors import UserError
from mtrl.io import checkpoint
from mtrl.networks import make_network
from mtrl.networks.backbone import BroNet
from mtrl.train.trainer import Trainer
from tests.conftest import ROOT, assert_one_line_error, compose_config, run_cli, smoke_run_config
from tests.test_balanced_training import _replay
from tests.test_compile import _assert_same_training
from tests.test_presets import flat_keys, lookup, preset

K, OBS, ACT = 3, 39, 4
TASKS = ["reach-v3", "push-v3", "drawer-close-v3"]
EMBEDDING = {"name": "embedding", "dim": 32, "normalize": True}
#: BRC at small widths: every part of the recipe (experiment=mt10_brc's agent section).
BRC = dict(
    backbone="bronet",
    actor_hidden_sizes=[32, 32],
    critic_hidden_sizes=[32, 32, 32],
    shared_task_embedding=True,
    init="orthogonal",
    critic_type="categorical",
    num_atoms=21,
    return_normalization="brc",
    log_std_min=-10.0,
    log_std_bounds="tanh",
    init_alpha=0.1,
    shared_alpha=True,
    alpha_loss="alpha",
    target_entropy=-2.0,
    weight_decay=1e-4,
    alpha_betas=[0.5, 0.999],
)


def brc_agent(encoder=EMBEDDING, **changes) -> SACAgent:
    torch.manual_seed(0)
    return SACAgent(OBS, ACT, TASKS, SACConfig(**{**BRC, **changes}), encoder, torch.device("cpu"))


# ----- the C51 projection --------------------------------------------------------------------------------------
def slow_projection(values: np.ndarray, probs: np.ndarray, v_min: float, v_max: float) -> np.ndarray:
    """Atom by atom: clip, then split the mass between the neighbouring atoms (all of it on an exact hit)."""
    n = probs.shape[-1]
    delta = (v_max - v_min) / (n - 1)
    out = np.zeros_like(probs, dtype=np.float64)
    for row in range(probs.shape[0]):
        for j in range(n):
            # Clipped to the support; the division can land a hair above the last atom (e.g. 27.000000000000004).
            b = min((min(max(values[row, j], v_min), v_max) - v_min) / delta, n - 1)
            low, high = math.floor(b), math.ceil(b)
            if low == high:
                out[row, low] += probs[row, j]
            else:
                out[row, low] += probs[row, j] * (high - b)
                out[row, high] += probs[row, j] * (b - low)
    return out


projection_cases = st.tuples(
    st.integers(2, 31),  # atoms
    st.floats(-50, 10),  # v_min
    st.floats(0.5, 60),  # width of the support
    st.integers(1, 6),  # rows
    st.integers(0, 2**31 - 1),  # seed of the values and probabilities
)


@settings(max_examples=60, deadline=None)
@given(projection_cases)
@example((28, 0.0, 2.1953125, 1, 0))  # v_max's atom computed as 27.000000000000004 of 27
def test_projection_equals_the_slow_reference_conserves_mass_and_stays_on_the_support(case):
    n, v_min, width, rows, seed = case
    v_max = v_min + width
    rng = np.random.default_rng(seed)
    values = rng.uniform(v_min - width, v_max + width, (rows, n))
    values[:, 0] = v_min + (v_max - v_min) * rng.integers(0, n, rows) / (n - 1)  # some values on atoms exactly
    probs = rng.dirichlet(np.ones(n), rows)
    out = cat.project(torch.tensor(values), torch.tensor(probs), v_min, v_max).numpy()
    np.testing.assert_allclose(out, slow_projection(values, probs, v_min, v_max), atol=1e-9)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-9)
    assert (out >= -1e-12).all()
    # The projection splits mass linearly, so it keeps the mean of the clipped values.
    atoms = np.linspace(v_min, v_max, n)
    np.testing.assert_allclose(out @ atoms, (probs * values.clip(v_min, v_max)).sum(-1), atol=1e-7 * (1 + width))


def test_projection_of_a_terminal_reward_is_the_reward_itself():
    """discount 0: every atom lands on r, so the target's mean is r (clipped to the support)."""
    agent = brc_agent()
    probs = torch.softmax(torch.randn(4, 21), -1)
    values = torch.tensor([0.3, -2.0, 9.9, 25.0])[:, None].expand(4, 21)
    target = cat.project(values, probs, -10.0, 10.0)
    torch.testing.assert_close(cat.expected_value(target, agent.atoms), torch.tensor([0.3, -2.0, 9.9, 10.0]))


# ----- return normalisation --------------------------------------------------------------------------------------
def test_discounted_returns_bootstrap_truncated_episodes_with_the_mean_reward():
    # gamma 0.5, rewards 1, 2, 3: truncated, the return after the last step is mean 2 x 1/(1 - 0.5) = 4.
    np.testing.assert_allclose(discounted_returns(np.array([1.0, 2.0, 3.0]), 0.5, True), [3.25, 4.5, 5.0])
    np.testing.assert_allclose(discounted_returns(np.array([1.0, 2.0, 3.0]), 0.5, False), [2.75, 3.5, 3.0])


def test_reward_divisors_follow_the_authors_formula():
    norm = ReturnNormalizer(3, gamma=0.5, v_max=10.0, target_entropy=-2.0, device=torch.device("cpu"))
    slot_tasks = np.array([0, 1, 2])
    for rewards, ends in ([1.0, -4.0, 0.0], False), ([2.0, -4.0, 0.0], False), ([3.0, -4.0, 0.0], True):
        done = np.array([ends, ends, False])
        norm.observe(slot_tasks, np.array(rewards), np.zeros(3, bool), done)
    # task 0: returns 3.25, 4.5, 5 -> G = 5; task 1: all -8 (rewards -4 bootstrapped at -4 x 2) -> G = |min| = 8.
    np.testing.assert_allclose(norm.lowest[:2], [3.25, -8.0])
    np.testing.assert_allclose(norm.highest[:2], [5.0, -8.0])
    alphas = torch.tensor([0.2, 0.1, 0.3])
    # (G - alpha / (1 - gamma) * target_entropy / 2) / v_max; task 2 has no finished episode: 1.
    expected = [(5.0 + 0.2 * 2 * 2 / 2) / 10, (8.0 + 0.1 * 2 * 2 / 2) / 10, 1.0]
    torch.testing.assert_close(norm.divisors(alphas), torch.tensor(expected))
    clone = ReturnNormalizer(3, 0.5, 10.0, -2.0, torch.device("cpu"))
    clone.load_state_dict(norm.state_dict())
    torch.testing.assert_close(clone.divisors(alphas), norm.divisors(alphas))
    with pytest.raises(UserError, match="return normaliser has 3 tasks, this run 2"):
        ReturnNormalizer(2, 0.5, 10.0, -2.0, torch.device("cpu")).load_state_dict(norm.state_dict())


def test_the_agent_divides_each_tasks_rewards_logs_the_divisors_and_checkpoints_them():
    agent = brc_agent()
    agent.observe_rewards(np.arange(K), np.array([1.0, 2.0, 3.0]), np.zeros(K, bool), np.ones(K, bool))
    batch = _replay().sample(np.full(K, 8))
    divisors = agent.return_normalizer.divisors(agent.alphas())
    torch.testing.assert_close(agent.normalized(batch).reward, batch.reward / divisors[batch.task_ids])
    metrics = agent.update(batch)
    torch.testing.assert_close(metrics["reward_divisor"], divisors)
    clone = brc_agent()
    clone.load_state_dict(agent.state_dict())
    torch.testing.assert_close(
        clone.return_normalizer.divisors(clone.alphas()), agent.return_normalizer.divisors(agent.alphas())
    )
    with pytest.raises(UserError, match="no return normaliser"):
        clone.load_state_dict(brc_agent(return_normalization="none").state_dict())


# ----- networks: BroNet, parameter counts, initialisation, the shared embedding ---------------------------------
def test_bronet_is_the_authors_block_layout():
    torch.manual_seed(0)
    net = BroNet(5, [8, 8, 8, 3])
    x = torch.randn(4, 5)
    ln = torch.nn.functional.layer_norm
    h = torch.relu(ln(net.input(x), (8,), net.input_norm.weight, net.input_norm.bias, 1e-6))
    for block in net.blocks:
        inner = torch.relu(ln(block.inner(h), (8,), block.inner_norm.weight, block.inner_norm.bias, 1e-6))
        h = h + ln(block.outer(inner), (8,), block.outer_norm.weight, block.outer_norm.bias, 1e-6)
    torch.testing.assert_close(net(x), net.output(h))
    assert len(net.blocks) == 2 and BroNet(5, [8, 8], activate_last=True).out_dim == 8


#: Parameter counts of the authors' networks (jaxrl/networks.py Critic and NormalTanhPolicy, initialised with flax
#: at Meta-World's 39-dim observations and 4-dim actions, embedding 32, ensemble 2, 101 bins).
AUTHORS_COUNTS = [
    ("critic", 10, 512, 2_293_258),  # the learner's default width
    ("critic", 10, 1024, 8_780_298),
    ("critic", 10, 4096, 135_782_922),  # train.py's default width
    ("critic", 50, 512, 2_294_538),
    ("actor", 10, 256, 153_608),  # BroNet trunk and the mean and log-std heads (the embedding is the critic's)
]


@pytest.mark.parametrize("role, tasks, width, expected", AUTHORS_COUNTS)
def test_parameter_counts_equal_the_authors(role, tasks, width, expected):
    names = [f"t{i}" for i in range(tasks)]
    in_dim, out_dim, depth = (OBS + ACT, 101, 3) if role == "critic" else (OBS, 2 * ACT, 2)
    with torch.device("meta"):  # sizes only: the 4096-wide critic holds 136M parameters
        net = make_network(
            "embedding", in_dim, out_dim, tasks, [width] * depth, names, "bronet", dim=32, normalize=True
        )
    count = sum(p.numel() for p in net.parameters()) - tasks * 32
    # Two critics around one shared embedding; the actor reads the critics' embedding (a buffer in the agent).
    assert (2 * count + tasks * 32 if role == "critic" else count) == expected


def test_the_agent_at_the_learner_defaults_has_the_authors_counts():
    agent = SACAgent(
        OBS,
        ACT,
        [f"t{i}" for i in range(10)],
        SACConfig(**{**BRC, "num_atoms": 101, "actor_hidden_sizes": [256] * 2, "critic_hidden_sizes": [512] * 3}),
        EMBEDDING,
        torch.device("cpu"),
    )
    assert sum(p.numel() for p in agent.critic.parameters()) == 2_293_258
    assert sum(p.numel() for p in agent.actor.parameters()) == 153_608


def test_orthogonal_init_scales_orthonormal_rows_and_the_log_std_rows_apart():
    agent = brc_agent()
    hidden = agent.critic.q1.top.blocks[0].inner.weight
    torch.testing.assert_close(hidden @ hidden.T, 2.0 * torch.eye(32), atol=1e-5, rtol=0)
    head = agent.actor.top.output.weight  # (2 |A|, width): mean rows, then log-std rows
    torch.testing.assert_close(head[:ACT] @ head[:ACT].T, 2.0 * torch.eye(ACT), atol=1e-5, rtol=0)
    torch.testing.assert_close(head[ACT:] @ head[ACT:].T, torch.eye(ACT), atol=1e-5, rtol=0)
    assert all(not b.any() for b in (agent.actor.top.output.bias, agent.critic.q2.top.input.bias))


def test_the_critics_share_one_embedding_that_the_actor_reads_but_does_not_train():
    agent = brc_agent()
    assert agent.critic.q1.embedding is agent.critic.q2.embedding
    assert "embedding" not in dict(agent.actor.named_parameters())
    batch = _replay().sample(np.full(K, 8))
    before = agent.critic.q1.embedding.detach().clone()
    agent.update(batch)
    assert not torch.equal(before, agent.critic.q1.embedding)
    torch.testing.assert_close(agent.actor.embedding, agent.critic.q1.embedding.detach())
    # The actor's own step leaves the table alone: only the critic's gradient reaches it.
    table = agent.critic.q1.embedding.detach().clone()
    agent.update_actor_and_alpha(agent.normalized(batch))
    torch.testing.assert_close(agent.critic.q1.embedding.detach(), table)


def test_adamw_decays_weights_decoupled():
    agent = brc_agent()
    p = agent.critic.q1.top.input.weight
    before = p.detach().clone()
    adam_step(agent.critic_optim, [p], [torch.zeros_like(p)])
    torch.testing.assert_close(p.detach(), before * (1 - 3e-4 * 1e-4))


# ----- the categorical critic in the update ----------------------------------------------------------------------
def test_categorical_targets_and_losses_follow_the_definitions():
    agent = brc_agent()
    batch = agent.normalized(_replay().sample(np.full(K, 8)))
    torch.manual_seed(3)
    target = agent.critic_targets(batch)
    torch.manual_seed(3)
    noise = torch.randn(len(batch), ACT)
    action, log_prob = agent.sample_action(None, batch.next_obs, batch.task_ids, noise)
    probs = cat.mean_probs(*agent.critic_target(batch.next_obs, action, batch.task_ids))
    values = batch.reward[:, None] + 0.99 * (1 - batch.terminated)[:, None] * (
        agent.atoms - agent.alphas()[0] * log_prob[:, None]
    )
    torch.testing.assert_close(target, cat.project(values, probs, -10.0, 10.0))
    q1, q2 = agent.critic(batch.obs, batch.action, batch.task_ids)
    loss = agent.critic_sample_loss(None, batch.obs, batch.action, batch.task_ids, target)
    expected = -(target * (torch.log_softmax(q1, -1) + torch.log_softmax(q2, -1))).sum(-1)
    torch.testing.assert_close(loss, expected)
    assert (loss >= 0).all()
    torch.testing.assert_close(agent.q_value(q1, q2), (cat.mean_probs(q1, q2) * agent.atoms).sum(-1))


@pytest.mark.parametrize("balancer", balancers.available())
def test_the_categorical_critic_updates_with_every_balancer(balancer):
    agent = brc_agent()
    agent.set_balancers(balancers.make(balancer, K), balancers.make(balancer, K))
    before = [p.clone() for p in agent.critic.parameters()]
    metrics = agent.update(_replay().sample(np.full(K, 8)))
    assert all(torch.isfinite(v).all() for v in metrics.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.critic.parameters()))


@pytest.mark.parametrize("encoder", ["onehot", "multihead", "moore", "care"])
def test_the_categorical_critic_composes_with_other_encoders(encoder):
    agent = brc_agent({"name": encoder}, backbone="mlp", shared_task_embedding=False, hidden_sizes=[32, 32])
    metrics = agent.update(_replay().sample(np.full(K, 8)))
    assert all(torch.isfinite(v).all() for v in metrics.values())


def compile_ready_brc_agent() -> SACAgent:
    """A BRC agent at test_compile's sizes whose tasks have finished episodes (non-trivial reward divisors)."""
    torch.manual_seed(0)
    agent = SACAgent(7, 2, TASKS, SACConfig(**{**BRC, "target_entropy": -1.0}), EMBEDDING, torch.device("cpu"))
    agent.observe_rewards(np.arange(K), np.array([1.0, 2.0, 3.0]), np.zeros(K, bool), np.ones(K, bool))
    return agent


def test_the_compiled_brc_update_equals_eager():
    """The traced update (aot_eager: eager's random numbers) with the shared embedding, the categorical loss,
    AdamW and the reward divisors: the same states as eager's."""
    _assert_same_training(compile_ready_brc_agent, {"backend": "aot_eager"}, [(8, 8, 8)] * 3)


@pytest.mark.slow
def test_the_inductor_compiled_brc_update_equals_eager():
    _assert_same_training(compile_ready_brc_agent, {}, [(8, 8, 8)] * 3)


# ----- errors ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"num_atoms": 1}, "agent.num_atoms=1"),
        ({"v_min": 10.0, "v_max": 10.0}, "agent.v_min=10.0"),
        ({"v_min": 5.0, "v_max": -5.0}, "agent.v_min=5.0"),
        ({"backbone": "resnet"}, "agent.backbone='resnet'"),
        ({"critic_type": "quantile"}, "agent.critic_type='quantile'"),
        ({"return_normalization": "popart"}, "agent.return_normalization='popart'"),
    ],
)
def test_bad_values_are_one_line_errors(changes, fragment):
    with pytest.raises(UserError, match=fragment) as err:
        SACConfig(**{**BRC, **changes})
    assert "\n" not in str(err.value)


def test_unbuildable_combinations_are_one_line_errors():
    with pytest.raises(UserError, match=r"agent.critic_hidden_sizes must be one or more equal widths"):
        brc_agent(critic_hidden_sizes=[32, 16])
    with pytest.raises(UserError, match="agent.backbone=bronet is not available with encoder moore"):
        brc_agent({"name": "moore"}, shared_task_embedding=False)
    with pytest.raises(UserError, match="shared_task_embedding=true needs encoder=embedding"):
        brc_agent({"name": "onehot"})
    with pytest.raises(UserError, match="agent.critic_type='categorical'"):
        CQLConfig(critic_type="categorical")


# ----- end to end and the presets --------------------------------------------------------------------------------
BRC_SMOKE = (
    "encoder=embedding",
    "encoder.normalize=true",
    "agent.backbone=bronet",
    "agent.critic_type=categorical",
    "agent.return_normalization=brc",
    "agent.shared_task_embedding=true",
    "agent.init=orthogonal",
    "agent.shared_alpha=true",
    "agent.weight_decay=1e-4",
)


def test_a_brc_run_trains_resumes_and_evaluates(tmp_path):
    run_dir = tmp_path / "run"
    Trainer(smoke_run_config(run_dir, *BRC_SMOKE, "total_steps=600"), run_dir).run()
    _, state = checkpoint.load(run_dir)
    saved = state["agent"]["return_normalizer"]
    assert all(np.isfinite(saved["highest"]))  # every task finished episodes (150 steps each)
    resumed = Trainer(smoke_run_config(run_dir, *BRC_SMOKE, "total_steps=900", f"resume={run_dir}"), run_dir)
    assert resumed.agent.return_normalizer.state_dict() == saved
    resumed.run()
    proc = run_cli("evaluate.py", f"checkpoint={run_dir}", "episodes_per_task=1")
    assert proc.returncode == 0, proc.stderr


BRC_PRESETS = {
    "mt10_brc": {"env.tasks": "mt10", "total_steps": 10_000_000, "warmup_steps": 50_000, "eval_every": 500_000},
    "mt50_brc": {"env.tasks": "mt50", "total_steps": 50_000_000, "warmup_steps": 250_000, "eval_every": 2_500_000},
}
BRC_VALUES = {
    "env.horizon": 200,
    "env.reward_normalization": False,
    "encoder.name": "embedding",
    "encoder.dim": 32,
    "encoder.normalize": True,
    "agent.backbone": "bronet",
    "agent.actor_hidden_sizes": [256, 256],
    "agent.critic_hidden_sizes": [4096, 4096, 4096],
    "agent.critic_type": "categorical",
    "agent.num_atoms": 101,
    "agent.v_max": 10.0,
    "agent.return_normalization": "brc",
    "agent.shared_task_embedding": True,
    "agent.init_alpha": 0.1,
    "agent.target_entropy": -2.0,
    "agent.weight_decay": 1e-4,
    "agent.alpha_betas": [0.5, 0.999],
    "updates_per_step": 2.0,
    "batch_sampling": "uniform",
    "batch_size": 1024,
    "eval_episodes": 10,
}


@pytest.mark.parametrize("name", BRC_PRESETS)
def test_brc_presets(name):
    config = preset(name)
    for key, expected in {**BRC_VALUES, **BRC_PRESETS[name]}.items():
        assert lookup(config, key) == expected, key
    tasks = 10 if name == "mt10_brc" else 50
    assert config["replay_capacity"] == 1_000_000 * tasks  # 1e6 per task, as the authors' buffer
    base = OmegaConf.to_container(compose_config("train", [f"env={name.split('_')[0]}", "encoder=embedding"]))
    assert flat_keys(config) == flat_keys(base)  # a preset sets only keys the base config has


def test_scaled_preset_is_the_meta_world_plus_setting_with_wide_multi_head_networks():
    scaled, base = preset("mt10_scaled"), preset("mt10_mwplus")
    assert scaled["encoder"]["name"] == "multihead" and scaled["agent"]["hidden_sizes"] == [2400] * 3
    assert {k: v for k, v in scaled["agent"].items() if k != "hidden_sizes"} == {
        k: v for k, v in base["agent"].items() if k != "hidden_sizes"
    }
    assert {k: scaled[k] for k in ("total_steps", "batch_size_per_task")} == {
        "total_steps": 20_000_000,
        "batch_size_per_task": 128,
    }


@pytest.mark.parametrize("name", ["mt10_brc", "mt50_brc"])
def test_brc_presets_build_and_update_at_small_widths(name):
    small = ["agent.critic_hidden_sizes=[32,32,32]", "agent.actor_hidden_sizes=[16,16]"]
    config = parse_train(compose_config("train", [f"experiment={name}", *small]))
    tasks = 10 if name == "mt10_brc" else 50
    agent = construct_agent(config, [f"task{i}" for i in range(tasks)], OBS, ACT, torch.device("cpu"))
    assert agent.categorical and agent.return_normalizer is not None and agent.config.shared_task_embedding


@pytest.mark.parametrize("name", ["mt10_brc", "mt50_brc", "mt10_scaled"])
def test_new_presets_name_their_sources_and_are_documented(name):
    lines = (ROOT / "configs" / "experiment" / f"{name}.yaml").read_text().splitlines()
    body = lines[next(i for i, line in enumerate(lines) if not line.startswith(("#", "defaults", "  - "))) :]
    values = [line for line in body if re.match(r"\s*\w+: \S", line)]
    assert values and all("#" in line for line in values), [line for line in values if "#" not in line]
    assert f"experiment={name}" in (ROOT / "docs" / "presets.md").read_text()


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        (["agent.num_atoms=1"], ["agent.num_atoms=1", ">= 2"]),
        (["agent.backbone=bronet", "encoder=moore"], ["agent.backbone=bronet", "encoder moore", "onehot"]),
    ],
)
def test_train_py_refuses_bad_brc_values_in_one_line(tmp_path, overrides, fragments):
    proc = run_cli("train.py", "experiment=smoke", f"run_dir={tmp_path / 'run'}", *overrides)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "run").exists()  # refused by the dry build, before the run directory
