"""Meta-World's own scripted expert policies, as a multi-task policy over raw 39-dim observations."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from metaworld.policies import ENV_POLICY_MAP

RAW_OBS_DIM = 39


class ScriptedPolicy:
    """Acts with each task's scripted expert; reads only the raw observation, never an appended one-hot."""

    def __init__(self, task_names: Sequence[str]):
        missing = [t for t in task_names if t not in ENV_POLICY_MAP]
        if missing:
            raise ValueError(f"no scripted policy for {', '.join(missing)}")
        self.experts = [ENV_POLICY_MAP[t]() for t in task_names]
        # The experts' gains exceed 1 by design (the env clips actions); metaworld warns about it every run.
        warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")

    def act(self, obs: np.ndarray, task_ids: np.ndarray) -> np.ndarray:
        """Actions (N, 4) for observations (N, >=39) of the given task ids, clipped to [-1, 1]."""
        raw = np.asarray(obs, dtype=np.float64)[:, :RAW_OBS_DIM]
        actions = np.stack([self.experts[t].get_action(o) for o, t in zip(raw, task_ids)])
        return np.clip(actions, -1.0, 1.0).astype(np.float32)
