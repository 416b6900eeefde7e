"""Typed configuration: the dataclasses per config group (`schema`, re-exported here). `mtrl.config.parse` builds
them from a composed Hydra config; it is imported from there, not from this package, so that the agents (whose
configs parse builds) can use the schema without an import cycle."""

import mtrl.config.resolvers  # noqa: F401  (registers the run-directory resolver)
from mtrl.config import schema
from mtrl.config.schema import *  # noqa: F403  (the config dataclasses, listed in schema.__all__)

__all__ = list(schema.__all__)
