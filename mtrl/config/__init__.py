"""Typed configuration: dataclasses per config group (schema) and the one place they are built from Hydra (parse)."""

import mtrl.config.resolvers  # noqa: F401  (registers the run-directory resolver)
from mtrl.config import schema
from mtrl.config.parse import parse_collect, parse_evaluate, parse_train, plain
from mtrl.config.schema import *  # noqa: F403  (the config dataclasses, listed in schema.__all__)

__all__ = ["parse_train", "parse_evaluate", "parse_collect", "plain", *schema.__all__]
