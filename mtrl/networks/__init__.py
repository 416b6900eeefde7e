"""Task-conditioned networks (encoders) for multi-task RL.

Every network has the same call signature::

    net = make_network(name, in_dim, out_dim, num_tasks, hidden_sizes, task_names=None, **options)
    y = net(x, task_ids)      # x: (B, in_dim) float, task_ids: (B,) long -> (B, out_dim)

and is safe under ``torch.func.functional_call`` + ``vmap``.  ``task_ids`` may also be a 0-dim
tensor meaning "one task for the whole batch" - the fast path when vmap-ing per-task gradients
over (K, n, in_dim) chunks with a (K,) id vector.  ``available()`` lists the names; each
encoder's options are the keyword-only arguments of its class (see ``options_of``), and
``net.task_specific_parameter_names()`` lists the parameters whose slice t only task t uses.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from torch import nn

from .backbone import BACKBONES
from .blocks import MLP, TaskConditionedNetwork, TaskLinear, check_choice
from .care import CARENetwork
from .embedding import EmbeddingNetwork
from .film import FiLMNetwork
from .moore import MOORENetwork
from .multihead import MultiHeadNetwork
from .observation_only import ObservationOnlyNetwork
from .onehot import OneHotNetwork
from .paco import PaCoNetwork
from .soft_modularization import SoftModularizationNetwork
from .task_bottom import TaskBottomNetwork

_REGISTRY: dict[str, type[TaskConditionedNetwork]] = {
    cls.name: cls
    for cls in (
        OneHotNetwork,
        ObservationOnlyNetwork,
        MultiHeadNetwork,
        EmbeddingNetwork,
        FiLMNetwork,
        TaskBottomNetwork,
        CARENetwork,
        SoftModularizationNetwork,
        MOORENetwork,
        PaCoNetwork,
    )
}


def available() -> list[str]:
    """Names accepted by :func:`make_network`."""
    return list(_REGISTRY)


def _get(name: str) -> type[TaskConditionedNetwork]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown encoder {name!r}; choose one of: {', '.join(available())}")
    return _REGISTRY[name]


def options_of(name: str) -> dict:
    """The options an encoder accepts, with their defaults."""
    sig = inspect.signature(_get(name).__init__)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}


def make_network(
    name: str,
    in_dim: int,
    out_dim: int,
    num_tasks: int,
    hidden_sizes: Sequence[int],
    task_names: Sequence[str] | None = None,
    backbone: str = "mlp",
    **options,
) -> nn.Module:
    """Build the task-conditioned network ``name`` with its layer stacks from ``backbone`` (mlp or bronet; the
    encoders whose layers are their own take mlp only); see the module docstring."""
    cls = _get(name)
    check_choice("backbone", backbone, BACKBONES)
    if backbone not in cls.backbones:
        with_it = ", ".join(n for n, c in _REGISTRY.items() if backbone in c.backbones)
        raise ValueError(f"backbone={backbone} is not available with encoder {name}; encoders with it: {with_it}")
    allowed = options_of(name)
    for key in options:
        if key not in allowed:
            allowed_txt = ", ".join(allowed) if allowed else "(none)"
            raise ValueError(f"unknown option {key!r} for encoder {name!r}; allowed options: {allowed_txt}")
    if backbone != "mlp":
        options["backbone"] = backbone
    return cls(in_dim, out_dim, num_tasks, hidden_sizes, task_names, **options)


__all__ = ["make_network", "available", "options_of", "MLP", "TaskLinear", "TaskConditionedNetwork"]
