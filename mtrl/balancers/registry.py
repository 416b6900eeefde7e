"""Name -> balancer class, and ``make`` with one-line errors for unknown names and options.

Every gradient method also takes ``loss_weighting`` (None or a loss method's name) and
``loss_weighting_options`` (that method's options): ``make`` then returns a :class:`Composed`.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Optional, cast

from mtrl import checks
from mtrl.balancers.base import Balancer, BalancerError, GradientBalancer, LossBalancer
from mtrl.balancers.cagrad import CAGrad
from mtrl.balancers.composed import Composed
from mtrl.balancers.fairgrad import FairGrad
from mtrl.balancers.famo import FAMO
from mtrl.balancers.igb import IGB
from mtrl.balancers.igbv2 import IGBv2
from mtrl.balancers.mgda import MGDA
from mtrl.balancers.nashmtl import NashMTL
from mtrl.balancers.paretomtl import ParetoMTL
from mtrl.balancers.pcgrad import PCGrad
from mtrl.balancers.uniform import Uniform
from mtrl.errors import UserError

REGISTRY: dict[str, type[Balancer]] = {
    cls.name: cls for cls in (CAGrad, FAMO, FairGrad, IGB, IGBv2, MGDA, NashMTL, ParetoMTL, PCGrad, Uniform)
}

#: The composition options of every gradient method (see :func:`make`).
COMPOSITION_OPTIONS = ("loss_weighting", "loss_weighting_options")


def available() -> list[str]:
    """Sorted names accepted by :func:`make`."""
    return sorted(REGISTRY)


def options(name: str) -> list[str]:
    """Option names of balancer ``name``: its constructor's keyword-only arguments (sorted), then for a
    gradient method the composition options ``loss_weighting`` and ``loss_weighting_options``."""
    cls = _lookup(name)
    params = inspect.signature(cls.__init__).parameters.values()
    own = sorted(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)
    return own + list(COMPOSITION_OPTIONS) if cls.kind == "gradient" else own


def _lookup(name: str) -> type[Balancer]:
    if name not in REGISTRY:
        raise BalancerError(f"unknown balancer {name!r}; choose one of: {', '.join(available())}")
    return REGISTRY[name]


def make(name: str, num_tasks: int, **opts: Any) -> Balancer:
    """Build balancer ``name`` for ``num_tasks`` tasks; unknown names/options and bad values raise BalancerError.

    A gradient method with ``loss_weighting`` set (a loss method's name; its options in
    ``loss_weighting_options``) comes back as a :class:`Composed`: the loss weights scale the rows of G.
    """
    cls, allowed = _lookup(name), options(name)
    if cls.kind == "loss" and opts.get("loss_weighting") is not None:
        raise checks.fail(
            "balancer.loss_weighting",
            opts["loss_weighting"],
            f"null ({name} weights the losses itself; a loss weighting goes with a gradient method: "
            f"{', '.join(_names('gradient'))})",
        )
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise BalancerError(
            f"unknown option {unknown[0]!r} for balancer {name!r}; allowed: {', '.join(allowed) or 'none'}"
        )
    loss_weighting, loss_options = opts.pop("loss_weighting", None), opts.pop("loss_weighting_options", None)
    balancer = cls(num_tasks, **opts)
    if loss_weighting is None and not loss_options:
        return balancer
    return Composed(cast(GradientBalancer, balancer), _loss_weighting(loss_weighting, num_tasks, loss_options or {}))


def _names(kind: str) -> list[str]:
    """Sorted names of the balancers of one kind ("loss" or "gradient")."""
    return [name for name in available() if REGISTRY[name].kind == kind]


def _loss_weighting(name: Optional[str], num_tasks: int, opts: Any) -> LossBalancer:
    """The loss half of a composition; its errors name the composition keys."""
    if name is None:
        raise checks.fail("balancer.loss_weighting_options", opts, "{} without balancer.loss_weighting")
    checks.choice("balancer.loss_weighting", name, _names("loss"))
    if not isinstance(opts, Mapping):
        raise checks.fail("balancer.loss_weighting_options", opts, "a mapping of option names to values")
    try:
        balancer = cast(LossBalancer, make(name, num_tasks, **opts))
    except UserError as err:
        raise BalancerError(f"balancer.loss_weighting_options: {err}") from None
    return balancer
