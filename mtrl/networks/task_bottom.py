"""Task-specific bottom layers: the first layer(s) separate per task, the upper layers shared."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import MLP, TaskConditionedNetwork, TaskLinear, check_int


class TaskBottomNetwork(TaskConditionedNetwork):
    """``shared_top(task_bottom_t(x))``.

    Options:
        depth: number of task-specific layers counted from the input, in
            [1, len(hidden_sizes) + 1] (default 1).  ``len(hidden_sizes) + 1`` makes every layer
            task-specific, i.e. K independent networks (the "one network per task" baseline).
    """

    name = "task_bottom"

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        hidden_sizes: Sequence[int],
        task_names: Sequence[str] | None = None,
        *,
        depth: int = 1,
    ):
        super().__init__(in_dim, out_dim, num_tasks, hidden_sizes, task_names)
        n_layers = len(self.hidden_sizes) + 1
        self.depth = check_int("depth", depth, 1, n_layers)
        dims = [self.in_dim, *self.hidden_sizes, self.out_dim]
        self.bottom = nn.ModuleList(TaskLinear(self.num_tasks, dims[i], dims[i + 1]) for i in range(self.depth))
        self.top = MLP(dims[self.depth], dims[self.depth + 1 :]) if self.depth < n_layers else None

    def _forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        n_layers = len(self.hidden_sizes) + 1
        for i, layer in enumerate(self.bottom):
            x = layer(x, task_ids)
            if i < n_layers - 1:
                x = torch.relu(x)
        return x if self.top is None else self.top(x)
