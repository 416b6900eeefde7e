"""One-hot task conditioning (MT-SAC): concatenate the task one-hot to the input, then an MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .backbone import BACKBONES, body
from .blocks import TaskConditionedNetwork, task_one_hot


class OneHotNetwork(TaskConditionedNetwork):
    """``MLP([x, onehot(task)])`` with ReLU hidden activations and a linear output (or a BroNet of the same)."""

    name = "onehot"
    backbones = BACKBONES

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        hidden_sizes: Sequence[int],
        task_names: Sequence[str] | None = None,
        backbone: str = "mlp",
    ):
        super().__init__(in_dim, out_dim, num_tasks, hidden_sizes, task_names, backbone=backbone)
        self.mlp = body(self.backbone, self.in_dim + self.num_tasks, [*self.hidden_sizes, self.out_dim])

    def _forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        onehot = task_one_hot(task_ids, self.num_tasks, x.dtype, x.shape[0])
        return self.mlp(torch.cat([x, onehot], dim=-1))
