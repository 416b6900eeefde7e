"""Learners: multi-task SAC (online), CQL and behaviour cloning (offline); they compute per-task losses only."""

from mtrl.agents.base import Agent, AgentConfig
from mtrl.agents.bc import BCAgent, BCConfig
from mtrl.agents.cql import CQLAgent, CQLConfig
from mtrl.agents.sac import SACAgent, SACConfig

__all__ = ["Agent", "AgentConfig", "SACAgent", "SACConfig", "CQLAgent", "CQLConfig", "BCAgent", "BCConfig"]
