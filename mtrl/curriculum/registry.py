"""Curriculum names -> classes, built with one-line errors for unknown names and options."""

from __future__ import annotations

import inspect
from typing import Any

from mtrl import checks
from mtrl.curriculum.base import Curriculum
from mtrl.curriculum.learning_progress import LearningProgress
from mtrl.errors import UserError

REGISTRY: dict[str, type[Curriculum]] = {cls.name: cls for cls in (Curriculum, LearningProgress)}


def available() -> list[str]:
    return sorted(REGISTRY)


def make(name: str, num_tasks: int, **options: Any) -> Curriculum:
    """Build curriculum `name` for `num_tasks` tasks."""
    if name not in REGISTRY:
        raise UserError(f"unknown curriculum '{name}'; choose one of: none, {', '.join(available())}")
    cls = REGISTRY[name]
    checks.unknown_keys("curriculum.", list(options), options_of(name))
    return cls(num_tasks, **options)


def options_of(name: str) -> list[str]:
    """The option names of curriculum `name` (the keyword-only arguments of its class)."""
    params = inspect.signature(REGISTRY[name].__init__).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY]
