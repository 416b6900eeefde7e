"""The layer stacks inside the encoders: a plain ReLU MLP, or BroNet's residual blocks with layer norm (BRC).

``body(backbone, in_dim, sizes, activate_last)`` builds either from the same arguments as ``MLP``: ``sizes`` are
the layers' output widths, the last one the output layer's unless ``activate_last`` (a feature trunk). BroNet
(Nauman et al. 2024; BRC, naumix/BiggerRegularizedCategorical jaxrl/networks.py:9-38) reads them as an input
layer of width ``sizes[0]`` (Dense, LayerNorm, ReLU) followed by one residual block per further width, each
``x + LN(Dense(ReLU(LN(Dense(x)))))``, so every hidden width must be equal; then a linear output layer, or, as a
trunk, the residual stream itself (the authors' actor puts its heads there).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import MLP

#: The backbones an encoder's layer stacks can be built from.
BACKBONES = ("mlp", "bronet")
#: Flax's LayerNorm epsilon (the authors' networks), not PyTorch's 1e-5.
LAYER_NORM_EPS = 1e-6


class BroNetBlock(nn.Module):
    """``x + LN(Dense(ReLU(LN(Dense(x)))))`` at one width."""

    def __init__(self, width: int):
        super().__init__()
        self.inner = nn.Linear(width, width)
        self.inner_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.outer = nn.Linear(width, width)
        self.outer_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.outer_norm(self.outer(torch.relu(self.inner_norm(self.inner(x)))))


class BroNet(nn.Module):
    """Dense, LayerNorm, ReLU into ``width``, then residual blocks, then a linear output layer (unless a trunk)."""

    def __init__(self, in_dim: int, sizes: Sequence[int], activate_last: bool = False):
        super().__init__()
        sizes = list(sizes)
        hidden = sizes if activate_last else sizes[:-1]
        if not hidden or len(set(hidden)) != 1:
            raise ValueError(
                f"hidden_sizes must be one or more equal widths with agent.backbone=bronet "
                f"(an input layer, then one residual block per further width), got {hidden}"
            )
        width = hidden[0]
        self.in_dim, self.width = in_dim, width
        self.input = nn.Linear(in_dim, width)
        self.input_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.blocks = nn.ModuleList(BroNetBlock(width) for _ in hidden[1:])
        self.output = None if activate_last else nn.Linear(width, sizes[-1])
        self.out_dim = width if activate_last else sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.input_norm(self.input(x)))
        for block in self.blocks:
            x = block(x)
        return x if self.output is None else self.output(x)


def body(backbone: str, in_dim: int, sizes: Sequence[int], activate_last: bool = False) -> nn.Module:
    """The layer stack of ``backbone`` (``mlp`` or ``bronet``) with ``MLP``'s arguments."""
    if backbone == "bronet":
        return BroNet(in_dim, sizes, activate_last)
    return MLP(in_dim, sizes, activate_last)


__all__ = ["BACKBONES", "BroNet", "BroNetBlock", "body"]
