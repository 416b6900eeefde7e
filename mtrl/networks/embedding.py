"""Learned task embedding concatenated to the input or to the first hidden features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import MLP, TaskConditionedNetwork, check_choice, check_float, check_int, task_rows


class EmbeddingNetwork(TaskConditionedNetwork):
    """A learned ``dim``-vector per task, concatenated to the features of an MLP.

    Options:
        dim: embedding size (default 32).
        where: ``input`` - concatenate to x before the first layer (default);
            ``hidden`` - concatenate to the output of the first hidden layer (the state is
            encoded first, task information enters the remaining layers; needs >= 1 hidden layer).
        init_std: std of the N(0, init_std^2) initial embeddings (default 1.0).
    """

    name = "embedding"
    per_task_parameters = ("embedding",)
    WHERE = ("input", "hidden")

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        hidden_sizes: Sequence[int],
        task_names: Sequence[str] | None = None,
        *,
        dim: int = 32,
        where: str = "input",
        init_std: float = 1.0,
    ):
        check_choice("where", where, self.WHERE)
        super().__init__(
            in_dim, out_dim, num_tasks, hidden_sizes, task_names, min_hidden_layers=1 if where == "hidden" else 0
        )
        self.dim = check_int("dim", dim, 1)
        self.where = where
        init_std = check_float("init_std", init_std, 0.0)
        self.embedding = nn.Parameter(torch.randn(self.num_tasks, self.dim) * init_std)
        h = self.hidden_sizes
        if where == "input":
            self.bottom = None
            self.top = MLP(self.in_dim + self.dim, [*h, self.out_dim])
        else:
            self.bottom = MLP(self.in_dim, h[:1], activate_last=True)
            self.top = MLP(h[0] + self.dim, [*h[1:], self.out_dim])

    def _forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        e = task_rows(self.embedding, task_ids, x.shape[0])
        if self.bottom is not None:
            x = self.bottom(x)
        return self.top(torch.cat([x, e], dim=-1))
