"""Soft Modularization (Yang et al., NeurIPS 2020): modules with soft task-and-state routing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import MLP, ParallelLinear, TaskConditionedNetwork, check_int, task_rows


class SoftModularizationNetwork(TaskConditionedNetwork):
    """Base policy network of ``num_layers`` layers of ``num_modules`` modules, soft-routed.

    - state encoder f(x): MLP with sizes ``hidden_sizes`` (ReLU), giving D = hidden_sizes[-1];
      task encoder g(t): a learned D-vector per task (a linear map of the one-hot).
    - routing network on e = f(x) * g(t):  q = MLP(relu(e)) (``routing_hidden``),
      logits_1 = W_d1 q,  logits_{l+1} = W_d(l+1) (relu(W_u(l) p_l) * q), where p_l is the
      softmax of logits_l over the source modules.  Layers 1..L-1 produce n x n matrices
      (module j of layer l+1 reads sum_i p_l[j, i] * out_l[i]); layer L produces an n-vector
      that mixes the last layer's modules into the output.
    - modules: layer 1 reads f(x); every module is Linear + ReLU of width ``module_hidden``;
      a final linear layer maps the mixed output to ``out_dim``.

    Options: num_layers (L >= 1, default 2; the paper uses 2 for MT10, 4 for MT50),
    num_modules (n >= 1, default 2; 2 / 4 in the paper), module_hidden (default 256),
    routing_hidden (default 256).
    """

    name = "soft_modularization"
    per_task_parameters = ("task_embedding",)

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        hidden_sizes: Sequence[int],
        task_names: Sequence[str] | None = None,
        *,
        num_layers: int = 2,
        num_modules: int = 2,
        module_hidden: int = 256,
        routing_hidden: int = 256,
    ):
        super().__init__(in_dim, out_dim, num_tasks, hidden_sizes, task_names, min_hidden_layers=1)
        self.num_layers = check_int("num_layers", num_layers, 1)
        self.num_modules = n = check_int("num_modules", num_modules, 1)
        self.module_hidden = m = check_int("module_hidden", module_hidden, 1)
        self.routing_hidden = r = check_int("routing_hidden", routing_hidden, 1)
        D = self.hidden_sizes[-1]
        L = self.num_layers

        self.state_encoder = MLP(self.in_dim, self.hidden_sizes, activate_last=True)
        self.task_embedding = nn.Parameter(torch.empty(self.num_tasks, D))
        nn.init.uniform_(self.task_embedding, -1.0, 1.0)
        self.routing_base = nn.Linear(D, r)
        # W_d: routing features -> logits (n*n for the L-1 inner transitions, n for the output)
        self.route_out = nn.ModuleList(nn.Linear(r, n * n if l < L - 1 else n) for l in range(L))
        # W_u: previous routing probabilities -> routing features
        self.route_up = nn.ModuleList(nn.Linear(n * n, r) for _ in range(L - 1))

        self.module_layers = nn.ModuleList(ParallelLinear(n, D if l == 0 else m, m) for l in range(L))
        self.out = nn.Linear(m, self.out_dim)

    def routing(self, features: torch.Tensor, task_ids: torch.Tensor) -> list[torch.Tensor]:
        """Routing probabilities per layer: L-1 tensors (B, n, n), then one (B, n)."""
        n, L = self.num_modules, self.num_layers
        e = features * task_rows(self.task_embedding, task_ids, features.shape[0])
        q = torch.relu(self.routing_base(torch.relu(e)))
        probs = []
        u = q
        for l in range(L):
            logits = self.route_out[l](u)
            if l < L - 1:
                p = torch.softmax(logits.reshape(-1, n, n), dim=-1)
                u = torch.relu(self.route_up[l](p.reshape(-1, n * n))) * q
            else:
                p = torch.softmax(logits, dim=-1)
            probs.append(p)
        return probs

    def _forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        f = self.state_encoder(x)
        probs = self.routing(f, task_ids)
        h = torch.relu(self.module_layers[0](f))  # (B, n, m)
        for l in range(1, self.num_layers):
            mixed = torch.einsum("bji,bim->bjm", probs[l - 1], h)
            h = torch.relu(self.module_layers[l](mixed))
        mixed = torch.einsum("bi,bim->bm", probs[-1], h)
        return self.out(mixed)
