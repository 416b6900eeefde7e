"""No task conditioning: an MLP of the input alone (facebookresearch/mtrl's MT-SAC baseline rows, whose networks see
the observation only; Meta-World's MT observations hold the goal, so tasks stay distinguishable by it)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .backbone import BACKBONES, body
from .blocks import TaskConditionedNetwork


class ObservationOnlyNetwork(TaskConditionedNetwork):
    """``MLP(x)``: the task ids are accepted (the common signature) and ignored."""

    name = "none"
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
        self.mlp = body(self.backbone, self.in_dim, [*self.hidden_sizes, self.out_dim])

    def _forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)
