"""Typed configuration: dataclasses per config group (schema) and the one place they are built from Hydra (parse)."""

import mtrl.config.resolvers  # noqa: F401  (registers the run-directory resolver)
from mtrl.config.parse import parse_collect, parse_evaluate, parse_train, plain
from mtrl.config.schema import (
    BalancerConfig,
    CollectConfig,
    CurriculumConfig,
    DiagnosticsConfig,
    EncoderConfig,
    EnvConfig,
    EvaluateConfig,
    OfflineConfig,
    TrainConfig,
    VideoConfig,
)

__all__ = [
    "parse_train",
    "parse_evaluate",
    "parse_collect",
    "plain",
    "TrainConfig",
    "EnvConfig",
    "EncoderConfig",
    "BalancerConfig",
    "CurriculumConfig",
    "OfflineConfig",
    "DiagnosticsConfig",
    "EvaluateConfig",
    "CollectConfig",
    "VideoConfig",
]
