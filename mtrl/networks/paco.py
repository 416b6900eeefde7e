"""PaCo (Sun et al., NeurIPS 2022): parameter-compositional multi-task network."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import ParallelLinear, TaskConditionedNetwork, check_int, task_rows


class PaCoNetwork(TaskConditionedNetwork):
    """A shared parameter set Phi = {phi_1..phi_S} (S full MLPs of identical shape) and a
    compositional vector w_t in R^S per task; task t's network has parameters Phi w_t.

    Because every layer is linear in its parameters, (sum_s w_s W_s) x + sum_s w_s b_s
    = sum_s w_s (W_s x + b_s): each layer evaluates the S parameter sets together (one batched
    matmul) and mixes the results with the sample's w_t - no per-task weight materialisation.

    Options: num_sets (S >= 1, default 5, the paper's MT10 value).  Task vectors start
    uniform in [0, 1) (then normalised to sum 1) so tasks differ from the first step.
    The paper's loss-maskout / reset tricks belong to the agent, not to this network.
    """

    name = "paco"
    per_task_parameters = ("task_vectors",)

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        hidden_sizes: Sequence[int],
        task_names: Sequence[str] | None = None,
        *,
        num_sets: int = 5,
    ):
        super().__init__(in_dim, out_dim, num_tasks, hidden_sizes, task_names)
        self.num_sets = check_int("num_sets", num_sets, 1)
        dims = [self.in_dim, *self.hidden_sizes, self.out_dim]
        self.layers = nn.ModuleList(ParallelLinear(self.num_sets, a, b) for a, b in zip(dims[:-1], dims[1:]))
        w = torch.rand(self.num_tasks, self.num_sets)
        self.task_vectors = nn.Parameter(w / w.sum(-1, keepdim=True))

    def _forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        w = task_rows(self.task_vectors, task_ids, x.shape[0]).unsqueeze(-1)  # (B, S, 1)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = (w * layer(x)).sum(-2)  # (B, out)
            if i < last:
                x = torch.relu(x)
        return x
