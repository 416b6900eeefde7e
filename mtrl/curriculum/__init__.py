"""Curricula over tasks: which tasks to train on (batch shares) and to collect (env slots)."""

from mtrl.curriculum.base import Curriculum
from mtrl.curriculum.learning_progress import LearningProgress
from mtrl.curriculum.registry import available, make

__all__ = ["Curriculum", "LearningProgress", "available", "make"]
