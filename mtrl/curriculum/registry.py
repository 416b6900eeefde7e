"""Curriculum names -> classes, built with one-line errors for unknown names and options."""

from __future__ import annotations

import inspect
from typing import Any

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
    allowed = [p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(f"unknown option '{unknown[0]}' for curriculum '{name}'; allowed: {', '.join(allowed) or 'none'}")
    return cls(num_tasks, **options)
