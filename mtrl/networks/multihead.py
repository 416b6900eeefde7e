"""Multi-head network (MT-MH-SAC): a shared trunk and one linear output head per task."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .backbone import BACKBONES, body
from .blocks import TaskConditionedNetwork, TaskLinear, task_one_hot


class MultiHeadNetwork(TaskConditionedNetwork):
    """``head_task(trunk(x))``; the trunk is ``hidden_sizes`` ReLU layers shared by all tasks.

    Options:
        task_input: also concatenate the task one-hot to the trunk's input (default False:
            the heads are the only task-specific part).
    """

    name = "multihead"
    backbones = BACKBONES

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        hidden_sizes: Sequence[int],
        task_names: Sequence[str] | None = None,
        backbone: str = "mlp",
        *,
        task_input: bool = False,
    ):
        super().__init__(in_dim, out_dim, num_tasks, hidden_sizes, task_names, backbone=backbone)
        self.task_input = bool(task_input)
        trunk_in = self.in_dim + (self.num_tasks if self.task_input else 0)
        self.trunk = body(self.backbone, trunk_in, self.hidden_sizes, activate_last=True)
        self.heads = TaskLinear(self.num_tasks, self.trunk.out_dim, self.out_dim)

    def _forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        if self.task_input:
            onehot = task_one_hot(task_ids, self.num_tasks, x.dtype, x.shape[0])
            x = torch.cat([x, onehot], dim=-1)
        return self.heads(self.trunk(x), task_ids)
