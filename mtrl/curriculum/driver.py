"""Connects a curriculum to a run: feeds it success estimates, turns its probabilities into batch counts
and env-slot task probabilities, and saves it in checkpoints."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from mtrl import checks
from mtrl.config.schema import CurriculumConfig
from mtrl.curriculum.base import Curriculum
from mtrl.curriculum.registry import make
from mtrl.train.replay import allocate

DRIVES = ("replay", "env", "both")
SOURCES = ("train", "eval")


class CurriculumDriver:
    """What the curriculum drives (batch shares, env slots or both) and where its success comes from."""

    def __init__(self, curriculum: Curriculum | None, drives: str = "replay", source: str = "train"):
        self.drives = checks.choice("curriculum.drives", drives, DRIVES)
        self.source = checks.choice("curriculum.source", source, SOURCES)
        self.curriculum = curriculum

    @classmethod
    def from_config(cls, config: CurriculumConfig, num_tasks: int) -> "CurriculumDriver":
        if config.name == "none":
            return cls(None)
        return cls(make(config.name, num_tasks, **config.options), config.drives, config.source)

    @property
    def active(self) -> bool:
        return self.curriculum is not None

    def observe_episodes(self, episodes: Iterable[Any]) -> None:
        """Feed finished training episodes (when source=train)."""
        if self.active and self.source == "train":
            for episode in episodes:
                self.curriculum.observe(episode.task_id, float(episode.success))

    def observe_evaluation(self, success_rates: Iterable[float]) -> bool:
        """Feed an evaluation's per-task success rates (source=eval)."""
        if not self.active or self.source != "eval":
            return False
        for task_id, rate in enumerate(success_rates):
            self.curriculum.observe(task_id, float(rate))
        return True

    def batch_counts(self, batch_size_per_task: int, replay_sizes: np.ndarray) -> np.ndarray:
        """Rows per task in the next batch: equal shares, or the curriculum's (tasks without data get none)."""
        k = len(replay_sizes)
        if not self.active or self.drives == "env" or not (replay_sizes > 0).any():
            return np.full(k, batch_size_per_task)
        probabilities = self.curriculum.probabilities() * (replay_sizes > 0)
        return allocate(batch_size_per_task * k, probabilities)

    def env_probabilities(self) -> np.ndarray | None:
        """Task probabilities for task-switching env slots, or None when the curriculum does not drive them."""
        if not self.active or self.drives == "replay":
            return None
        return self.curriculum.probabilities()

    def push(self, env: Any, switching: bool) -> None:
        """Give task-switching env slots (`switching`) the current task probabilities; only when it drives them."""
        probabilities = self.env_probabilities()
        if probabilities is not None and switching:
            env.set_task_probabilities(probabilities)

    def log(self, log: Any, counts: np.ndarray, step: int) -> None:
        """Per-task probabilities, learning progress and batch counts to TensorBoard (when active)."""
        if self.active:
            log.per_task("curriculum/probability", self.curriculum.probabilities(), step)
            log.per_task("curriculum/progress", self.curriculum.progress(), step)
            log.per_task("curriculum/batch_count", counts, step)

    def state_dict(self) -> dict[str, Any]:
        return self.curriculum.state_dict() if self.active else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.active:
            self.curriculum.load_state_dict(state)
