"""MOORE (Hendawi et al., ICLR 2024): orthogonal mixture of experts with multi-head outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import (
    ParallelMLP,
    TaskConditionedNetwork,
    TaskLinear,
    check_choice,
    check_int,
    gram_schmidt,
    task_one_hot,
    task_rows,
)

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "none": lambda x: x}


class MOORENetwork(TaskConditionedNetwork):
    """k expert MLPs -> Gram-Schmidt (orthonormal per sample) -> task-weighted sum -> head.

    Each expert is an MLP with sizes ``hidden_sizes`` (linear last layer), giving a
    ``d = hidden_sizes[-1]`` representation; the k representations of a sample are
    orthonormalised, combined with the task's k weights (a bias-free linear map of the task
    one-hot, i.e. one learned k-vector per task), passed through ``activation`` and fed to a
    per-task linear head.

    Options:
        num_experts: k, in [1, d] (default 4; the paper uses 4 for MT10, 6 for MT50).
        multihead: per-task output heads (default True); False uses one shared linear head on
            ``[features, task one-hot]``.
        activation: applied to the combined representation: ``tanh`` (default, as in the
            reference implementation), ``relu`` or ``none``.
    """

    name = "moore"
    per_task_parameters = ("task_weights",)

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        hidden_sizes: Sequence[int],
        task_names: Sequence[str] | None = None,
        *,
        num_experts: int = 4,
        multihead: bool = True,
        activation: str = "tanh",
    ):
        super().__init__(in_dim, out_dim, num_tasks, hidden_sizes, task_names, min_hidden_layers=1)
        d = self.hidden_sizes[-1]
        self.num_experts = check_int("num_experts", num_experts, 1, d)
        self.activation = check_choice("activation", activation, tuple(_ACTIVATIONS))
        self.multihead = bool(multihead)
        self.experts = ParallelMLP(self.num_experts, self.in_dim, self.hidden_sizes)
        # Task weights: row t is task t's combination of the k orthonormal representations.
        self.task_weights = nn.Parameter(torch.empty(self.num_tasks, self.num_experts))
        nn.init.xavier_uniform_(self.task_weights)
        if self.multihead:
            self.head = TaskLinear(self.num_tasks, d, self.out_dim)
        else:
            self.head = nn.Linear(d + self.num_tasks, self.out_dim)

    def expert_representations(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, k, d), orthonormal rows per sample."""
        return gram_schmidt(self.experts(x))

    def _forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        v = self.expert_representations(x)  # (B, k, d)
        w = task_rows(self.task_weights, task_ids, x.shape[0])  # (B, k)
        h = _ACTIVATIONS[self.activation]((w.unsqueeze(-1) * v).sum(-2))
        if self.multihead:
            return self.head(h, task_ids)
        onehot = task_one_hot(task_ids, self.num_tasks, h.dtype, h.shape[0])
        return self.head(torch.cat([h, onehot], dim=-1))
