"""The edge: a composed Hydra config (or a checkpoint's saved config) becomes a checked `TrainConfig`, once.

Unknown keys are refused with the nearest valid key suggested; every value is checked by the dataclass
it lands in. Configs saved by earlier releases (CQL options under `offline.*`, agents without a name)
are upgraded first, so old checkpoints still load.
"""

from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from mtrl import checks
from mtrl.agents.registry import AGENTS, agent_class, agent_config
from mtrl.config.schema import (
    BalancerConfig,
    CollectConfig,
    CurriculumConfig,
    DiagnosticsConfig,
    EncoderConfig,
    EnvConfig,
    EvaluateConfig,
    OfflineConfig,
    TrainConfig,
    VideoConfig,
)
from mtrl.errors import UserError

#: Top-level keys that only the command line uses (Hydra sweeps); not part of a run's configuration.
CLI_ONLY_KEYS = ("sweep",)
#: The pre-agent-group layout kept the CQL options under `offline`; they now belong to `agent=cql`.
_LEGACY_CQL_KEYS = ("cql_alpha", "cql_num_actions", "cql_temperature", "bc_updates")


def plain(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """A resolved plain-dict copy of a config (Hydra node or mapping)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return {k: (plain(v) if isinstance(v, (Mapping, DictConfig)) else v) for k, v in cfg.items()}


def split_name(prefix: str, values: Mapping[str, Any] | None, default: str) -> tuple[str, dict[str, Any]]:
    """(name, the other keys) of a group whose `name` picks a method and whose other keys are its options."""
    values = dict(values or {})
    name = values.pop("name", default)
    if not isinstance(name, str):
        raise checks.fail(prefix, name, "a name")
    return name, values


def upgrade(raw: dict[str, Any]) -> dict[str, Any]:
    """A config saved by an earlier release in today's layout (agent name, CQL options in the agent group)."""
    raw = dict(raw)
    agent = dict(raw.get("agent") or {})
    offline = dict(raw.get("offline") or {})
    if "name" not in agent:
        agent["name"] = "cql" if raw.get("mode") == "offline" else "sac"
        if agent["name"] == "cql":
            agent.update({key: offline[key] for key in _LEGACY_CQL_KEYS if key in offline})
    for key in _LEGACY_CQL_KEYS:
        offline.pop(key, None)
    raw["agent"], raw["offline"] = agent, offline
    balancer = dict(raw.get("balancer") or {})
    if "normalize" in balancer:  # pcgrad's mtrl variant was once the flag `normalize`
        if balancer.pop("normalize"):
            balancer["variant"] = "mtrl"
        raw["balancer"] = balancer
    return raw


def network_encoder(raw: dict[str, Any], network: str) -> EncoderConfig:
    """`<network>.encoder` with its options when set, else the shared `encoder` group."""
    section = dict(raw.get(network) or {})
    checks.unknown_keys(f"{network}.", list(section), ["encoder", "encoder_options"])
    if section.get("encoder") is None:
        name, options = split_name("encoder", raw.get("encoder"), "onehot")
        return EncoderConfig(name, options)
    return EncoderConfig(section["encoder"], dict(section.get("encoder_options") or {}), f"{network}.encoder_options")


def parse_train(cfg: Mapping[str, Any] | DictConfig) -> TrainConfig:
    """The checked `TrainConfig` of a composed `train` config; one-line UserError on the first bad value."""
    raw = upgrade(plain(cfg))
    data = {k: v for k, v in raw.items() if k not in CLI_ONLY_KEYS}
    env = checks.build_dataclass(EnvConfig, "env", data.pop("env", None))
    agent_name, agent_options = split_name("agent", data.pop("agent", None), "sac")
    agent = agent_config(agent_name, agent_options)
    encoders = {net: network_encoder(data, net) for net in ("actor", "critic")}
    for key in ("encoder", "actor", "critic"):
        data.pop(key, None)
    balancer_name, balancer_options = split_name("balancer", data.pop("balancer", None), "uniform")
    apply_to = balancer_options.pop("apply_to", None)
    curriculum_name, curriculum_options = split_name("curriculum", data.pop("curriculum", None), "none")
    drives = curriculum_options.pop("drives", None)
    source = curriculum_options.pop("source", "train")
    offline = checks.build_dataclass(
        OfflineConfig,
        "offline",
        {
            "dataset": data.pop("dataset", None),
            "sharing": data.pop("sharing", "none"),
            **(data.pop("offline", None) or {}),
        },
    )
    diagnostics = checks.build_dataclass(DiagnosticsConfig, "diagnostics", data.pop("diagnostics", None))
    config = checks.build_dataclass(
        TrainConfig,
        "",
        {
            **data,
            "env": env,
            "agent": agent,
            "actor_encoder": encoders["actor"],
            "critic_encoder": encoders["critic"],
            "balancer": BalancerConfig(balancer_name, apply_to, balancer_options),
            "curriculum": CurriculumConfig(curriculum_name, drives, source, curriculum_options),
            "offline": offline,
            "diagnostics": diagnostics,
            "raw": raw,
        },
    )
    check_agent_mode(config)
    return config


def check_agent_mode(config: TrainConfig) -> None:
    """The agent must train in the run's mode (SAC online; CQL and BC offline), with what the mode needs."""
    cls = agent_class(config.agent.name)
    if cls.mode != config.mode:
        others = ", ".join(f"agent={n}" for n in _agents_for(config.mode))
        raise UserError(f"agent={config.agent.name} trains {cls.mode}; mode={config.mode} uses {others}")
    if config.offline_mode:
        if config.offline.dataset in (None, ""):
            raise UserError(
                "mode=offline needs dataset=<path to an .h5 dataset> "
                "(create one with python collect.py output=<path.h5>)"
            )
        if config.offline.sharing in ("cds", "cds_zero") and not cls.has_q:
            raise UserError(
                f"sharing={config.offline.sharing} filters with a Q function; agent={config.agent.name} "
                f"has none (use agent=cql, or sharing=none|all)"
            )


def _agents_for(mode: str) -> list[str]:
    return sorted(name for name, cls in AGENTS.items() if cls.mode == mode)


def parse_evaluate(cfg: Mapping[str, Any] | DictConfig) -> EvaluateConfig:
    """The checked `EvaluateConfig` of a composed `evaluate` config (env given only when env.tasks is set)."""
    data = plain(cfg)
    env = data.pop("env", None) or {}
    video = {key: data.pop(f"video_{key}") for key in ("dir", "episodes", "format", "fps") if f"video_{key}" in data}
    if "dir" in video:
        video["directory"] = video.pop("dir")
    video = checks.build_dataclass(VideoConfig, "video", {"record": data.pop("record", False), **video})
    given = env.get("tasks") is not None
    return checks.build_dataclass(
        EvaluateConfig,
        "",
        {**data, "env": checks.build_dataclass(EnvConfig, "env", env) if given else None, "video": video},
    )


def parse_collect(cfg: Mapping[str, Any] | DictConfig) -> CollectConfig:
    """The checked `CollectConfig` of a composed `collect` config."""
    data = plain(cfg)
    return checks.build_dataclass(
        CollectConfig, "", {**data, "env": checks.build_dataclass(EnvConfig, "env", data.pop("env", None))}
    )
