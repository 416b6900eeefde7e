"""The reference presets (configs/experiment/mt*_mtrl.yaml, mt*_mwplus.yaml): composition, key values, aliases.

The values and their sources are documented in docs/presets.md; these tests pin the values that define each
setting, check the step arithmetic the sources imply, and check that the documented balancer lines compose.
"""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT, compose_config

EXPERIMENTS = ROOT / "configs" / "experiment"
PRESETS = ("mt10_mtrl", "mt50_mtrl", "mt10_mwplus", "mt25_mwplus", "mt50_mwplus")
NUM_TASKS = {"mt10": 10, "mt25": 25, "mt50": 50}
#: Every source trains for 2M vector steps (one step of every task).
VECTOR_STEPS = 2_000_000
#: Protocol horizons; the mtrl source evaluates only at episode starts (150-step episodes).
MTRL_HORIZON = 150

#: What defines each setting: env, network, SAC details, batch and replay, evaluation.
EXPECTED = {
    "mt10_mtrl": {
        "env.tasks": "mt10",
        "env.protocol": "mtrl",
        "env.reward_normalization": True,
        "env.reward_version": "v1",
        "env.fixed_goal": "seeded",
        "encoder.name": "none",
        "agent.shared_alpha": True,
        "agent.alpha_loss": "alpha",
        "agent.critic_loss": "sum",
        "warmup_burst_updates": 1500,
        "batch_sampling": "uniform",
        "batch_size": 1280,
        "horizon_next_obs": "reset",
        "agent.hidden_sizes": [400, 400, 400],
        "agent.init": "xavier",
        "agent.log_std_bounds": "tanh",
        "agent.clip_grad_norm": None,
        "batch_size_per_task": 128,
        "replay_capacity": 1_000_000,
        "warmup_steps": 15_000,
        "eval_episodes": 1,
    },
    "mt50_mtrl": {
        "env.tasks": "mt50",
        "env.protocol": "mtrl",
        "env.reward_normalization": True,
        "env.reward_version": "v1",
        "env.fixed_goal": "seeded",
        "encoder.name": "none",
        "agent.shared_alpha": True,
        "agent.alpha_loss": "alpha",
        "agent.critic_loss": "sum",
        "warmup_burst_updates": 1500,
        "batch_sampling": "uniform",
        "batch_size": 1280,
        "horizon_next_obs": "reset",
        "agent.hidden_sizes": [400, 400, 400],
        "agent.init": "xavier",
        "agent.log_std_bounds": "tanh",
        "agent.clip_grad_norm": None,
        "batch_size_per_task": 26,
        "replay_capacity": 1_000_000,
        "warmup_steps": 75_000,
        "eval_episodes": 1,
    },
    "mt10_mwplus": {
        "env.tasks": "mt10",
        "env.protocol": "metaworld",
        "env.reward_normalization": False,
        "agent.hidden_sizes": [400, 400, 400],
        "agent.init": "he_uniform",
        "agent.adam_eps": 1e-5,
        "agent.critic_loss": "mean",
        "agent.log_std_bounds": "clamp",
        "agent.clip_grad_norm": 1.0,
        "batch_size_per_task": 128,
        "replay_capacity": 1_000_000,
        "warmup_steps": 40_000,
        "eval_every": 200_000,
        "eval_episodes": 50,
    },
    "mt25_mwplus": {
        "env.tasks": "mt25",
        "env.protocol": "metaworld",
        "env.reward_normalization": False,
        "agent.hidden_sizes": [400, 400, 400],
        "agent.init": "he_uniform",
        "agent.adam_eps": 1e-5,
        "agent.critic_loss": "mean",
        "agent.log_std_bounds": "clamp",
        "agent.clip_grad_norm": 1.0,
        "batch_size_per_task": 128,
        "replay_capacity": 2_500_000,
        "warmup_steps": 100_000,
        "eval_every": 200_000,
        "eval_episodes": 50,
    },
    "mt50_mwplus": {
        "env.tasks": "mt50",
        "env.protocol": "metaworld",
        "env.reward_normalization": False,
        "agent.hidden_sizes": [400, 400, 400],
        "agent.init": "he_uniform",
        "agent.adam_eps": 1e-5,
        "agent.critic_loss": "mean",
        "agent.log_std_bounds": "clamp",
        "agent.clip_grad_norm": 1.0,
        "batch_size_per_task": 128,
        "replay_capacity": 5_000_000,
        "warmup_steps": 200_000,
        "eval_every": 200_000,
        "eval_episodes": 50,
    },
}


def preset(name: str, *overrides: str) -> dict:
    """The composed train config of `experiment=<name>` as a plain container (interpolations unresolved)."""
    return OmegaConf.to_container(compose_config("train", [f"experiment={name}", *overrides]), resolve=False)


def lookup(config: dict, dotted: str):
    """The value at a dotted key such as `env.protocol`."""
    for part in dotted.split("."):
        config = config[part]
    return config


def flat_keys(config: dict, prefix: str = "") -> set[str]:
    """Dotted paths of every leaf (empty mappings count as leaves)."""
    keys = set()
    for key, value in config.items():
        path = f"{prefix}{key}"
        keys |= flat_keys(value, f"{path}.") if isinstance(value, dict) and value else {path}
    return keys


@pytest.mark.parametrize("name", PRESETS)
def test_preset_values(name: str) -> None:
    config = preset(name)
    for key, expected in EXPECTED[name].items():
        assert lookup(config, key) == expected, key
    assert config["balancer"]["name"] == "uniform"
    assert config["agent"]["target_entropy"] is None and config["agent"]["init_alpha"] == 1.0


@pytest.mark.parametrize("name", PRESETS)
def test_preset_step_arithmetic(name: str) -> None:
    """Step counts are whole vector steps: 2M of them, warm-up and evaluation periods too."""
    config = preset(name)
    tasks = NUM_TASKS[config["env"]["tasks"]]
    assert config["total_steps"] == VECTOR_STEPS * tasks
    for key in ("warmup_steps", "eval_every", "checkpoint_every", "replay_capacity"):
        assert config[key] % tasks == 0, key
    if config["env"]["protocol"] == "mtrl":
        assert (config["eval_every"] // tasks) % MTRL_HORIZON == 0


@pytest.mark.parametrize("name", PRESETS)
def test_preset_adds_no_keys(name: str) -> None:
    """A preset only sets keys the base config has (Hydra would silently accept a misspelt one from a file)."""
    env = name.split("_")[0]
    assert flat_keys(preset(name)) == flat_keys(OmegaConf.to_container(compose_config("train", [f"env={env}"])))


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_value_names_its_source(name: str) -> None:
    """Each `key: value` line below the defaults list carries a comment (its source file)."""
    lines = (EXPERIMENTS / f"{name}.yaml").read_text().splitlines()
    body = lines[next(i for i, line in enumerate(lines) if not line.startswith(("#", "defaults", "  - "))) :]
    values = [line for line in body if re.match(r"\s*\w+: \S", line)]
    assert values and all("#" in line for line in values), [line for line in values if "#" not in line]


@pytest.mark.parametrize("alias, target", [("mt10", "mt10_mtrl"), ("mt50", "mt50_mtrl")])
def test_aliases_compose_to_their_presets(alias: str, target: str) -> None:
    assert preset(alias) == preset(target)
    assert preset(alias, "seed=3")["seed"] == 3


def documented_balancer_lines() -> list[str]:
    """The `balancer=...` command lines of docs/presets.md's balancer table."""
    text = (ROOT / "docs" / "presets.md").read_text()
    return sorted(set(re.findall(r"`(balancer=[^`]+)`", text)))


def test_docs_list_the_authors_balancers() -> None:
    lines = " ".join(documented_balancer_lines())
    for fragment in (
        "balancer.c=0.9",
        "balancer.c=0.5",
        "balancer.alpha=2",
        "balancer.gamma=0.01",
        "balancer.lr=0.025",
        "balancer=pcgrad",
    ):
        assert fragment in lines, fragment


@pytest.mark.parametrize("line", documented_balancer_lines())
@pytest.mark.parametrize("name", ["mt10_mtrl", "mt50_mtrl"])
def test_documented_balancer_lines_compose(name: str, line: str) -> None:
    config = preset(name, *line.split())
    assert config["balancer"]["name"] == line.split()[0].removeprefix("balancer=")
    assert config["env"]["protocol"] == "mtrl"


@pytest.mark.parametrize("line", documented_balancer_lines())
def test_documented_balancer_lines_build_their_agents(line: str) -> None:
    """Each line builds the preset's agent (at small sizes): the temperature balancing needs its shared alpha."""
    import torch

    from mtrl.agents.factory import construct_agent
    from mtrl.config.parse import parse_train

    config = parse_train(compose_config("train", ["experiment=mt10_mtrl", *line.split(), "agent.hidden_sizes=[8]"]))
    agent = construct_agent(config, [f"task{i}" for i in range(10)], 39, 4, torch.device("cpu"))
    assert ("alpha" in agent.objectives) == ("alpha" in config.balancer.apply_to)


def test_presets_are_documented() -> None:
    text = (ROOT / "docs" / "presets.md").read_text()
    for name in PRESETS:
        assert f"experiment={name}" in text, name
