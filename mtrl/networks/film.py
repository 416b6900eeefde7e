"""FiLM / model patch (Mudrakarta et al., ICLR 2019): per-task scale and bias on hidden features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import TaskConditionedNetwork, check_choice, task_rows


class FiLMNetwork(TaskConditionedNetwork):
    """Shared MLP whose every hidden layer is modulated per task: ``h <- gamma_t * h + beta_t``.

    gamma starts at 1 and beta at 0, so at initialisation the network is task-independent and
    each task learns its own small "patch" (2 * sum(hidden_sizes) parameters per task).

    Options:
        position: ``pre`` - modulate the pre-activation (like the model patch's BatchNorm scale
            and bias; default); ``post`` - modulate after the ReLU.
    """

    name = "film"
    per_task_parameters = ("gammas", "betas")
    POSITIONS = ("pre", "post")

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        hidden_sizes: Sequence[int],
        task_names: Sequence[str] | None = None,
        *,
        position: str = "pre",
    ):
        check_choice("position", position, self.POSITIONS)
        super().__init__(in_dim, out_dim, num_tasks, hidden_sizes, task_names, min_hidden_layers=1)
        self.position = position
        dims = [self.in_dim, *self.hidden_sizes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.gammas = nn.ParameterList(nn.Parameter(torch.ones(self.num_tasks, h)) for h in self.hidden_sizes)
        self.betas = nn.ParameterList(nn.Parameter(torch.zeros(self.num_tasks, h)) for h in self.hidden_sizes)
        self.out = nn.Linear(dims[-1], self.out_dim)

    def _forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        for layer, gamma, beta in zip(self.layers, self.gammas, self.betas):
            x = layer(x)
            g = task_rows(gamma, task_ids, x.shape[0])
            b = task_rows(beta, task_ids, x.shape[0])
            if self.position == "pre":
                x = torch.relu(g * x + b)
            else:
                x = g * torch.relu(x) + b
        return self.out(x)
