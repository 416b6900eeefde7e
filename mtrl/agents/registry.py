"""Agent name -> class; the one line to add for a new algorithm."""

from __future__ import annotations

from typing import Any, Mapping

from mtrl import checks
from mtrl.agents.base import Agent, AgentConfig
from mtrl.agents.bc import BCAgent
from mtrl.agents.cql import CQLAgent
from mtrl.agents.sac import SACAgent

AGENTS: dict[str, type[Agent]] = {cls.name: cls for cls in (SACAgent, CQLAgent, BCAgent)}


def agent_class(name: str) -> type[Agent]:
    """The agent class registered as `name`."""
    return AGENTS[checks.choice("agent", name, sorted(AGENTS))]


def agent_config(name: str, options: Mapping[str, Any]) -> AgentConfig:
    """The checked config of agent `name` from its options (unknown options are refused with a suggestion)."""
    return checks.build_dataclass(agent_class(name).Config, "agent", {**options, "name": name})
