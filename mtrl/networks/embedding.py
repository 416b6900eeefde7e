"""Learned task embedding concatenated to the input or to the first hidden features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .backbone import BACKBONES, body
from .blocks import TaskConditionedNetwork, check_choice, check_float, check_int, task_rows


class EmbeddingNetwork(TaskConditionedNetwork):
    """A learned ``dim``-vector per task, concatenated to the features of an MLP.

    Options:
        dim: embedding size (default 32).
        where: ``input`` - concatenate to x before the first layer (default);
            ``hidden`` - concatenate to the output of the first hidden layer (the state is
            encoded first, task information enters the remaining layers; needs >= 1 hidden layer).
        init_std: std of the N(0, init_std^2) initial embeddings (default 1.0).
        normalize: scale each task's embedding to unit length before use (BRC's; default False).
    """

    name = "embedding"
    backbones = BACKBONES
    per_task_parameters = ("embedding",)
    WHERE = ("input", "hidden")

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        hidden_sizes: Sequence[int],
        task_names: Sequence[str] | None = None,
        backbone: str = "mlp",
        *,
        dim: int = 32,
        where: str = "input",
        init_std: float = 1.0,
        normalize: bool = False,
    ):
        check_choice("where", where, self.WHERE)
        super().__init__(
            in_dim,
            out_dim,
            num_tasks,
            hidden_sizes,
            task_names,
            min_hidden_layers=1 if where == "hidden" else 0,
            backbone=backbone,
        )
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be true or false, got {normalize!r}")
        self.normalize = normalize
        self.dim = check_int("dim", dim, 1)
        self.where = where
        init_std = check_float("init_std", init_std, 0.0)
        self.embedding = nn.Parameter(torch.randn(self.num_tasks, self.dim) * init_std)
        h = self.hidden_sizes
        if where == "input":
            self.bottom = None
            self.top = body(self.backbone, self.in_dim + self.dim, [*h, self.out_dim])
        else:
            self.bottom = body(self.backbone, self.in_dim, h[:1], activate_last=True)
            self.top = body(self.backbone, h[0] + self.dim, [*h[1:], self.out_dim])

    def _forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        e = task_rows(self.embedding, task_ids, x.shape[0])
        if self.normalize:  # unit-length embeddings (BRC, jaxrl/networks.py:40-51)
            e = e / torch.linalg.vector_norm(e, dim=-1, keepdim=True)
        if self.bottom is not None:
            x = self.bottom(x)
        return self.top(torch.cat([x, e], dim=-1))
