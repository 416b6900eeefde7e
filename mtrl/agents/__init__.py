"""Learners: multi-task SAC (online) and its offline variants; they compute per-task losses only."""

from mtrl.agents.sac import SACAgent, SACConfig

__all__ = ["SACAgent", "SACConfig"]
