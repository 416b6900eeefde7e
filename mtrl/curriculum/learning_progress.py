"""Learning-progress curriculum (Kanitscheider et al. 2021): favour tasks whose success is changing.

Per task, a fast EMA of success p_fast and a slow EMA p_slow (of p_fast). Both pass through
f(p) = p (1 - theta) / (p + theta (1 - 2p)), which stretches low success rates, and the
bidirectional learning progress is LP = |f(p_fast) - f(p_slow)| (forgetting counts too). The
probabilities are sigmoid(z-score of LP) normalised, mixed with a uniform floor so every task
keeps at least `floor` probability. Equal progress everywhere gives uniform sampling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mtrl import checks
from mtrl.curriculum.base import Curriculum
from mtrl.errors import UserError


def reweight(p: np.ndarray, theta: float) -> np.ndarray:
    """f(p) = p (1 - theta) / (p + theta (1 - 2p)): maps [0, 1] to [0, 1], steeper near p = 0."""
    return p * (1.0 - theta) / (p + theta * (1.0 - 2.0 * p))


class LearningProgress(Curriculum):
    """Sample tasks in proportion to a sigmoid of their z-scored absolute learning progress."""

    name = "learning_progress"
    default_drives = "replay"

    def __init__(
        self,
        num_tasks: int,
        *,
        fast_rate: float = 0.1,
        slow_rate: float = 0.02,
        theta: float = 0.1,
        floor: float | None = None,
    ):
        super().__init__(num_tasks)
        fast_rate = checks.number("curriculum.fast_rate", fast_rate, 0, 1, strict_low=True)
        slow_rate = checks.number("curriculum.slow_rate", slow_rate, 0, fast_rate, strict_low=True)
        theta = checks.number("curriculum.theta", theta, 0, 0.5, strict_low=True, strict_high=True)
        floor = checks.number("curriculum.floor", 0.1 / num_tasks if floor is None else floor, 0, 1.0 / num_tasks)
        self.fast_rate, self.slow_rate, self.theta, self.floor = fast_rate, slow_rate, theta, floor
        self.p_fast = np.zeros(num_tasks)
        self.p_slow = np.zeros(num_tasks)
        self.seen = np.zeros(num_tasks, dtype=bool)

    def observe(self, task_id: int, success: float) -> None:
        if not self.seen[task_id]:  # start both EMAs at the first estimate: no spurious progress
            self.p_fast[task_id] = self.p_slow[task_id] = success
            self.seen[task_id] = True
            return
        self.p_fast[task_id] += self.fast_rate * (success - self.p_fast[task_id])
        self.p_slow[task_id] += self.slow_rate * (self.p_fast[task_id] - self.p_slow[task_id])

    def progress(self) -> np.ndarray:
        return np.abs(reweight(self.p_fast, self.theta) - reweight(self.p_slow, self.theta))

    def probabilities(self) -> np.ndarray:
        lp = self.progress()
        std = lp.std()
        z = (lp - lp.mean()) / std if std > 1e-12 else np.zeros_like(lp)
        weights = 1.0 / (1.0 + np.exp(-z))
        return self.floor + (1.0 - self.num_tasks * self.floor) * weights / weights.sum()

    def state_dict(self) -> dict[str, Any]:
        return {"p_fast": self.p_fast.copy(), "p_slow": self.p_slow.copy(), "seen": self.seen.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["p_fast"]) != self.num_tasks:
            raise UserError(f"curriculum state has {len(state['p_fast'])} tasks; this run has {self.num_tasks}")
        self.p_fast[:], self.p_slow[:], self.seen[:] = state["p_fast"], state["p_slow"], state["seen"]
