"""BRC's per-task reward scaling: rewards divided by each task's largest discounted return, entropy-corrected.

As naumix/BiggerRegularizedCategorical computes it (jaxrl/normalizer.py:17-24,33-44,60-65): at the end of each
training episode, the discounted Monte-Carlo return from every step of it (a truncated episode bootstraps with
its mean reward times the horizon 1/(1-gamma)); per task, the smallest and largest seen so far. A batch's
rewards of task i are divided by

    (G_i - alpha_i / (1 - gamma) * target_entropy / 2) / v_max,   G_i = max(G_max_i, |G_min_i|),

so that returns, and with them the critic's targets, span about [-v_max, v_max] on every task whatever its
reward scale. A task without a finished episode yet keeps its rewards unscaled (divisor 1).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from mtrl.errors import UserError


def discounted_returns(rewards: np.ndarray, gamma: float, truncated: bool) -> np.ndarray:
    """The discounted return from every step of one episode; a truncated episode continues, after its last
    step, with a return of its mean reward times 1/(1-gamma) (the authors' bootstrap)."""
    values = np.zeros(len(rewards), dtype=np.float64)
    following = float(np.mean(rewards)) / (1.0 - gamma) if truncated and len(rewards) else 0.0
    for i in range(len(rewards) - 1, -1, -1):
        following = float(rewards[i]) + gamma * following
        values[i] = following
    return values


class ReturnNormalizer:
    """Running per-task extremes of the discounted returns of finished episodes, and the reward divisors."""

    def __init__(self, num_tasks: int, gamma: float, v_max: float, target_entropy: float, device: torch.device):
        self.num_tasks, self.gamma, self.v_max, self.target_entropy = num_tasks, gamma, v_max, target_entropy
        self.horizon = 1.0 / (1.0 - gamma)
        self.lowest = np.full(num_tasks, np.inf)
        self.highest = np.full(num_tasks, -np.inf)
        self.device = device
        self.largest = torch.zeros(num_tasks, device=device)  # G_i on the device (0: no finished episode yet)
        self.seen = torch.zeros(num_tasks, dtype=torch.bool, device=device)
        self._episodes: dict[int, list[float]] = {}  # env slot -> its running episode's rewards

    def observe(self, task_ids: np.ndarray, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        """One vector step's rewards, one per env slot; a slot whose episode ended adds its returns to its task."""
        changed = False
        for slot, reward in enumerate(rewards):
            episode = self._episodes.setdefault(slot, [])
            episode.append(float(reward))
            if terminated[slot] or truncated[slot]:
                values = discounted_returns(np.asarray(episode), self.gamma, bool(truncated[slot]))
                task = int(task_ids[slot])
                self.lowest[task] = min(self.lowest[task], values.min())
                self.highest[task] = max(self.highest[task], values.max())
                self._episodes[slot] = []
                changed = True
        if changed:
            self._sync()

    def _sync(self) -> None:
        seen = np.isfinite(self.highest)
        largest = np.where(seen, np.maximum(self.highest, np.abs(self.lowest)), 0.0)
        self.largest = torch.as_tensor(largest, dtype=torch.float32, device=self.device)
        self.seen = torch.as_tensor(seen, device=self.device)

    def divisors(self, alphas: Tensor) -> Tensor:
        """(K,) what each task's rewards are divided by at temperatures `alphas` (K,); 1 for unseen tasks."""
        scaled = (self.largest - alphas * self.horizon * self.target_entropy / 2.0) / self.v_max
        return torch.where(self.seen, scaled, torch.ones_like(scaled))

    def state_dict(self) -> dict[str, Any]:
        """The per-task extremes (a resumed run restarts its episodes, so running episodes are not kept)."""
        return {"lowest": self.lowest.tolist(), "highest": self.highest.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        lowest, highest = np.asarray(state["lowest"], dtype=np.float64), np.asarray(state["highest"], np.float64)
        if lowest.shape != (self.num_tasks,) or highest.shape != (self.num_tasks,):
            raise UserError(
                f"the checkpoint's return normaliser has {lowest.size} tasks, this run {self.num_tasks}; "
                f"resume with the tasks it was trained on"
            )
        self.lowest, self.highest = lowest, highest
        self._episodes = {}
        self._sync()


__all__ = ["ReturnNormalizer", "discounted_returns"]
