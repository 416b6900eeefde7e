"""What every curriculum offers: observe per-task success, give task probabilities, save its state."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np


class Curriculum:
    """Uniform over tasks; subclasses reweight from the success they observe."""

    name: ClassVar[str] = "uniform"
    #: What it drives unless `curriculum.drives` says: uniform batch shares equal no curriculum, so the
    #: uniform curriculum drives the env slots as well; a reweighting one drives the batch shares.
    default_drives: ClassVar[str] = "both"

    def __init__(self, num_tasks: int):
        self.num_tasks = num_tasks

    def observe(self, task_id: int, success: float) -> None:
        """Record one success estimate (an episode's 0/1, or an evaluation's rate) for a task."""

    def probabilities(self) -> np.ndarray:
        """(K,) sampling probabilities, summing to 1."""
        return np.full(self.num_tasks, 1.0 / self.num_tasks)

    def progress(self) -> np.ndarray:
        """(K,) the per-task signal behind the probabilities (0 for uniform), for logging."""
        return np.zeros(self.num_tasks)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""
