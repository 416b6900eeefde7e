"""Name -> balancer class, and ``make`` with one-line errors for unknown names and options."""

from __future__ import annotations

import inspect
from typing import Any

from mtrl.balancers.base import Balancer, BalancerError
from mtrl.balancers.cagrad import CAGrad
from mtrl.balancers.fairgrad import FairGrad
from mtrl.balancers.famo import FAMO
from mtrl.balancers.igb import IGB
from mtrl.balancers.nashmtl import NashMTL
from mtrl.balancers.pcgrad import PCGrad
from mtrl.balancers.uniform import Uniform

REGISTRY: dict[str, type[Balancer]] = {cls.name: cls for cls in (CAGrad, FAMO, FairGrad, IGB, NashMTL, PCGrad, Uniform)}


def available() -> list[str]:
    """Sorted names accepted by :func:`make`."""
    return sorted(REGISTRY)


def options(name: str) -> list[str]:
    """Sorted option names of balancer ``name`` (the keyword-only arguments of its constructor)."""
    params = inspect.signature(_lookup(name).__init__).parameters.values()
    return sorted(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _lookup(name: str) -> type[Balancer]:
    if name not in REGISTRY:
        raise BalancerError(f"unknown balancer {name!r}; choose one of: {', '.join(available())}")
    return REGISTRY[name]


def make(name: str, num_tasks: int, **opts: Any) -> Balancer:
    """Build balancer ``name`` for ``num_tasks`` tasks; unknown names/options and bad values raise BalancerError."""
    cls, allowed = _lookup(name), options(name)
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise BalancerError(
            f"unknown option {unknown[0]!r} for balancer {name!r}; allowed: {', '.join(allowed) or 'none'}"
        )
    return cls(num_tasks, **opts)
