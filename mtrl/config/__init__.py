"""Typed configuration: the dataclasses per config group (`schema`, re-exported here) and, through
`mtrl.config.parse`, the one place they are built from a composed Hydra config.

`parse_train`, `parse_evaluate`, `parse_collect` and `plain` are importable from here too, resolved on first use
(PEP 562): this package itself does not import the parser, so the agents (whose configs the parser builds) can
use the schema without an import cycle.
"""

from typing import Any

import mtrl.config.resolvers  # noqa: F401  (registers the run-directory resolver)
from mtrl.config import schema
from mtrl.config.schema import *  # noqa: F403  (the config dataclasses, listed in schema.__all__)

PARSERS = ("parse_train", "parse_evaluate", "parse_collect", "plain")
__all__ = [*schema.__all__, *PARSERS]


def __getattr__(name: str) -> Any:
    if name in PARSERS:
        from mtrl.config import parse

        return getattr(parse, name)
    raise AttributeError(f"module 'mtrl.config' has no attribute {name!r}")
