"""Shared building blocks for task-conditioned networks.

Everything here is written so that it works under ``torch.func.functional_call`` and
``torch.func.vmap``: no in-place operations on inputs, no Python control flow that depends on
tensor *values* (only on shapes), no ``.item()``.  Per-task layers never loop over tasks in
Python: they gather the task's parameters and use one batched tensor op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "MLP",
    "ScalarLinear",
    "linear",
    "TaskLinear",
    "ParallelLinear",
    "ParallelMLP",
    "gram_schmidt",
    "TaskConditionedNetwork",
    "task_one_hot",
    "task_rows",
    "check_int",
    "check_float",
    "check_choice",
    "check_hidden_sizes",
]


# ----------------------------------------------------------------------------------------------
# Argument validation (all errors are one-line ValueErrors naming the value and the allowed range)
# ----------------------------------------------------------------------------------------------
def check_int(name: str, value, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int, or raise ValueError naming it and the allowed range."""
    rng = f"in [{low}, {high}]" if high is not None else f">= {low}"
    if isinstance(value, (bool, float)) or not hasattr(value, "__index__"):
        raise ValueError(f"{name} must be an integer {rng}, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer {rng}, got {value}")
    return value


def check_float(name: str, value, low: float, high: float | None = None, low_inclusive: bool = True) -> float:
    """Return ``value`` as a float, or raise ValueError naming it and the allowed range."""
    lb = "[" if low_inclusive else "("
    rng = f"in {lb}{low}, {high}]" if high is not None else f"{'>=' if low_inclusive else '>'} {low}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number {rng}, got {value!r}")
    value = float(value)
    too_low = value < low if low_inclusive else value <= low
    if math.isnan(value) or too_low or (high is not None and value > high):
        raise ValueError(f"{name} must be a number {rng}, got {value}")
    return value


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def check_hidden_sizes(hidden_sizes, min_layers: int = 0, name: str = "hidden_sizes") -> list[int]:
    if isinstance(hidden_sizes, (str, bytes)) or not hasattr(hidden_sizes, "__iter__"):
        raise ValueError(f"{name} must be a sequence of positive integers, got {hidden_sizes!r}")
    sizes = list(hidden_sizes)
    if len(sizes) < min_layers:
        raise ValueError(f"{name} must have at least {min_layers} layer(s) for this encoder, got {sizes!r}")
    return [check_int(f"{name}[{i}]", s, 1) for i, s in enumerate(sizes)]


# ----------------------------------------------------------------------------------------------
# Tensor helpers
# ----------------------------------------------------------------------------------------------
def task_rows(table: torch.Tensor, task_ids: torch.Tensor, batch: int) -> torch.Tensor:
    """Per-sample rows of a per-task table: (K, ...) -> (batch, ...).

    ``task_ids`` is (batch,) or 0-dim (one task for the whole batch; the row is broadcast).
    """
    rows = table.index_select(0, task_ids.reshape(-1))
    return rows.expand(batch, *table.shape[1:])


def task_one_hot(task_ids: torch.Tensor, num_tasks: int, dtype: torch.dtype, batch: int) -> torch.Tensor:
    """(batch,) or 0-dim long -> (batch, num_tasks) one-hot.

    vmap-safe (``F.one_hot`` validates values with ``.item()``)."""
    classes = torch.arange(num_tasks, device=task_ids.device)
    return (task_ids.reshape(-1, 1) == classes).to(dtype).expand(batch, num_tasks)


def _linear_init_(weight: torch.Tensor, bias: torch.Tensor | None, fan_in: int) -> None:
    """Same distribution as ``nn.Linear``'s default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        if bias is not None:
            bias.uniform_(-bound, bound)


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------
class ScalarLinear(nn.Linear):
    """``nn.Linear`` with one output (a critic's value head), computed as a row-wise dot product with its weight
    row: compiled, it fuses into the ReLU before it and its backward into the ReLU's, where a one-column GEMM and
    its backward (an outer product with one inner index, and a one-row weight gradient) were three GEMM calls
    each costing more than the layer's FLOPs (compiled update 0.96x at 2 x 64, one thread)."""

    def __init__(self, in_features: int, bias: bool = True):
        super().__init__(in_features, 1, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x * self.weight[0]).sum(-1, keepdim=True)
        return y if self.bias is None else y + self.bias


def linear(in_dim: int, out_dim: int) -> nn.Linear:
    """A dense layer: `ScalarLinear` for one output, else ``nn.Linear`` (the same parameters either way)."""
    return ScalarLinear(in_dim) if out_dim == 1 else nn.Linear(in_dim, out_dim)


class MLP(nn.Module):
    """Linear layers of the given output sizes with ReLU between them.

    ``MLP(in_dim, [400, 400, out])`` has ReLU after the two hidden layers and a linear output;
    with ``activate_last=True`` the last layer is followed by ReLU too (a feature encoder).
    An empty ``sizes`` is the identity.
    """

    def __init__(self, in_dim: int, sizes: Sequence[int], activate_last: bool = False):
        super().__init__()
        self.in_dim = in_dim
        self.sizes = list(sizes)
        self.out_dim = self.sizes[-1] if self.sizes else in_dim
        self.activate_last = activate_last
        dims = [in_dim, *self.sizes]
        self.layers = nn.ModuleList(linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < n - 1 or self.activate_last:
                x = torch.relu(x)
        return x


class TaskLinear(nn.Module):
    """A separate linear layer per task, applied to a mixed-task batch in one batched op.

    Parameters: ``weight`` (K, out, in) and ``bias`` (K, out).  Two equivalent strategies,
    chosen from shapes only (never from tensor values, so it is vmap-safe):

    - ``gather``: gather each sample's (out, in) matrix and apply it with ``torch.bmm``;
      memory O(B * out * in).
    - ``all``: x placed in its task's block of a (B, K * in) input, times all K matrices stacked
      as one (K * in, out) GEMM; memory O(B * K * in), compute K times that of ``gather`` but
      as one dense GEMM (its backward too).

    ``mode='auto'`` picks the one with the smaller per-sample intermediate (``gather`` iff
    out_dim < K).  In both, task j's parameters get exactly zero gradient from samples of
    task i != j.
    """

    MODES = ("auto", "gather", "all")

    def __init__(self, num_tasks: int, in_dim: int, out_dim: int, bias: bool = True, mode: str = "auto"):
        super().__init__()
        check_choice("mode", mode, self.MODES)
        self.num_tasks, self.in_dim, self.out_dim = num_tasks, in_dim, out_dim
        self.mode = mode
        self.weight = nn.Parameter(torch.empty(num_tasks, out_dim, in_dim))
        self.bias = nn.Parameter(torch.empty(num_tasks, out_dim)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _linear_init_(self.weight, self.bias, self.in_dim)

    def _resolved_mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        return "gather" if self.out_dim < self.num_tasks else "all"

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        # x: (B, in), task_ids: (B,) or 0-dim (whole batch is one task) -> (B, out)
        if task_ids.dim() == 0:
            # One task for the batch: a plain dense layer with that task's matrix.  Under
            # vmap over task chunks this becomes one bmm with each chunk's own matrix.
            idx = task_ids.reshape(1)
            y = x @ self.weight.index_select(0, idx).squeeze(0).t()
            if self.bias is not None:
                y = y + self.bias.index_select(0, idx)
            return y
        if self._resolved_mode() == "gather":
            w = self.weight.index_select(0, task_ids)  # (B, out, in)
            y = torch.bmm(w, x.unsqueeze(-1)).squeeze(-1)
        else:
            # Place x in its task's block of a (B, K * in) input (zeros elsewhere) and apply all K
            # matrices stacked as one (K * in, out) GEMM: dense maths, and backward is a GEMM too.
            k, o, i = self.weight.shape
            onehot = task_one_hot(task_ids, k, x.dtype, x.shape[0])
            blocks = (onehot.unsqueeze(-1) * x.unsqueeze(1)).reshape(x.shape[0], k * i)
            y = blocks @ self.weight.transpose(1, 2).reshape(k * i, o)
        if self.bias is not None:
            y = y + self.bias.index_select(0, task_ids)
        return y

    def extra_repr(self) -> str:
        return (
            f"num_tasks={self.num_tasks}, in_dim={self.in_dim}, out_dim={self.out_dim}, "
            f"bias={self.bias is not None}, mode={self.mode}"
        )


class ParallelLinear(nn.Module):
    """``n`` independent linear layers evaluated together (experts / modules / parameter sets).

    ``weight`` (n, out, in), ``bias`` (n, out).  Input (B, in) is fed to all n layers; input
    (B, n, in) feeds slice i to layer i.  Output (B, n, out).
    """

    def __init__(self, n: int, in_dim: int, out_dim: int, bias: bool = True):
        super().__init__()
        self.n, self.in_dim, self.out_dim = n, in_dim, out_dim
        self.weight = nn.Parameter(torch.empty(n, out_dim, in_dim))
        self.bias = nn.Parameter(torch.empty(n, out_dim)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _linear_init_(self.weight, self.bias, self.in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            n, o, i = self.weight.shape
            y = (x @ self.weight.reshape(n * o, i).t()).reshape(x.shape[0], n, o)
        else:
            y = torch.einsum("bni,noi->bno", x, self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self) -> str:
        return f"n={self.n}, in_dim={self.in_dim}, out_dim={self.out_dim}"


class ParallelMLP(nn.Module):
    """``n`` independent MLPs of identical shape on the same input: (B, in) -> (B, n, out)."""

    def __init__(self, n: int, in_dim: int, sizes: Sequence[int], activate_last: bool = False):
        super().__init__()
        if not sizes:
            raise ValueError("ParallelMLP needs at least one layer")
        self.n, self.in_dim, self.out_dim = n, in_dim, sizes[-1]
        self.activate_last = activate_last
        dims = [in_dim, *sizes]
        self.layers = nn.ModuleList(ParallelLinear(n, a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last or self.activate_last:
                x = torch.relu(x)
        return x


def gram_schmidt(u: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Batched modified Gram-Schmidt over dim -2: (..., n, d) -> (..., n, d) orthonormal rows.

    Loops over the n rows (a static count, never over tasks or samples).  Needs n <= d; a row
    that is (numerically) in the span of the previous ones comes out ~0 instead of NaN.
    """
    basis: list[torch.Tensor] = []
    for j in range(u.shape[-2]):
        v = u[..., j, :]
        for b in basis:
            v = v - (v * b).sum(-1, keepdim=True) * b
        v = v / (torch.linalg.vector_norm(v, dim=-1, keepdim=True) + eps)
        basis.append(v)
    return torch.stack(basis, dim=-2)


# ----------------------------------------------------------------------------------------------
# Base class of every encoder
# ----------------------------------------------------------------------------------------------
class TaskConditionedNetwork(nn.Module):
    """Base class: ``net(x, task_ids) -> y``.

    Accepts any number of leading batch dims (``x``: (..., in_dim), ``task_ids``: (...)) and
    flattens them for the subclass's ``_forward(x2d, ids)``.  ``task_ids`` may also be a 0-dim
    tensor: one task for the whole batch.  That is the fast path for per-task gradients
    (``vmap`` over (K, n, in_dim) chunks with a (K,) id vector): per-task layers then apply the
    chunk's own matrix instead of evaluating every task's.  Subclasses must accept both forms,
    which the helpers ``task_rows`` / ``task_one_hot`` / ``TaskLinear`` do.  Subclasses set
    ``name`` and declare their options as keyword-only ``__init__`` arguments (read by
    ``make_network``).
    """

    name: str = ""
    #: The backbones (mtrl/networks/backbone.py) this encoder's layer stacks can be built from.
    backbones: tuple[str, ...] = ("mlp",)
    # Names of parameters (besides those of TaskLinear layers) whose dim 0 indexes the task
    # and whose slice t only ever receives gradient from samples of task t.
    per_task_parameters: tuple[str, ...] = ()

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        hidden_sizes: Sequence[int],
        task_names: Sequence[str] | None = None,
        min_hidden_layers: int = 0,
        backbone: str = "mlp",
    ):
        super().__init__()
        self.backbone = check_choice("backbone", backbone, self.backbones)
        self.in_dim = check_int("in_dim", in_dim, 1)
        self.out_dim = check_int("out_dim", out_dim, 1)
        self.num_tasks = check_int("num_tasks", num_tasks, 1)
        self.hidden_sizes = check_hidden_sizes(hidden_sizes, min_hidden_layers)
        if task_names is not None:
            task_names = [str(t) for t in task_names]
            if len(task_names) != self.num_tasks:
                raise ValueError(f"task_names has {len(task_names)} entries but num_tasks is {self.num_tasks}")
        self.task_names = task_names

    def task_specific_parameter_names(self) -> list[str]:
        """Parameters of shape (num_tasks, ...) whose slice t is used only by task t.

        Their per-task gradients never conflict (task i's loss gives task j's slice exactly
        zero gradient), so a gradient balancer can leave them out of its per-task gradient
        computation and apply the plain sum of task losses to them: this saves K x their size
        in memory for vmap-ed per-task gradients.
        """
        names = [
            n
            for n, _ in self.named_parameters()
            if n in self.per_task_parameters or n.rsplit(".", 1)[0] in self.per_task_parameters
        ]
        for mod_name, mod in self.named_modules():
            if isinstance(mod, TaskLinear):
                names += [f"{mod_name}.{n}" for n, _ in mod.named_parameters()]
        return names

    def _forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"{self.name}: expected x with last dim {self.in_dim}, got shape {tuple(x.shape)}")
        if task_ids.dim() != 0 and tuple(task_ids.shape) != tuple(x.shape[:-1]):
            raise ValueError(
                f"{self.name}: task_ids shape {tuple(task_ids.shape)} must equal "
                f"x's batch shape {tuple(x.shape[:-1])} (or be 0-dim)"
            )
        lead = x.shape[:-1]
        ids = task_ids.long() if task_ids.dim() == 0 else task_ids.reshape(-1).long()
        y = self._forward(x.reshape(-1, self.in_dim), ids)
        return y.reshape(*lead, self.out_dim)
