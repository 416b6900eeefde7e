"""The one place where per-task losses become parameter gradients: a network's loss through a balancer.

Loss-weighting methods (uniform, famo, igb) differentiate sum_i c_i l_i. Gradient methods get the
(K, D) per-task gradients from one `vmap(grad)` pass over task chunks of the batch, combine the
columns of the shared parameters, and give task-specific parameters (per-task heads, FiLM scales, ...)
their mean-loss gradient: their task slices never conflict.

Per-task losses come from one of two layouts with equal values: `chunks` evaluates the batch one task
chunk at a time under vmap (per-task layers apply each task's own matrices as one batched matmul; needed
for per-task gradients), `batch` evaluates the per-sample loss on the whole task-contiguous batch and
averages each task's rows (a reshape to (K, n) for equal counts; no vmap). `auto` (the default) uses `batch`
when no layer of the network holds a matrix per task (per-task tables such as embeddings are row lookups)
and the update runs eagerly: vmap's dispatch costs an eager update 1.6x at 2 x 32 networks and 1.04x at
3 x 400, and 1.34x for BRC's pooled batches (unequal counts, 3 x 128 critics). A compiled
update traces vmap away, and there `chunks` measured 0.89x (2 x 32) and 0.97x (3 x 400) of `batch`
(MT-SAC, one-hot, K=10, one CPU thread).

The update of a `static` balancer (uniform: constant weights) needs no host work at all: under
`torch.compile` its gradients come from `torch.func.grad`, so the whole update traces as one graph;
eagerly they come from autograd on the live parameters (less dispatch overhead than torch.func).

All of these are fixed by the objective's `UpdatePlan` when it is built or re-planned, never switched per
call: an update runs one path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

import torch
from torch import Tensor, nn

from mtrl.balancers.base import Balancer
from mtrl.balancers.stats import gradient_stats
from mtrl.balancers.task_gradients import per_task_gradients
from mtrl.batch import Counts, chunk_by_task, equal_count, task_counts
from mtrl.networks.blocks import TaskLinear

# (params, **tensors) -> per-sample losses (B,), or (losses, {name: per-sample values (B,)}) whose
# per-task means come back from the objective alongside the losses (e.g. SAC's log-probabilities).
# `params` is a name -> tensor dict of the network's parameters; the sample losses that `gradients`
# evaluates eagerly must also accept None, meaning "call the network with its own parameters".
SampleLoss = Callable[..., Union[Tensor, tuple[Tensor, dict[str, Tensor]]]]
TaskAux = dict[str, Tensor]  # name -> (K,) per-task means of a sample loss's extra outputs
Grads = dict[str, Tensor]  # parameter name -> gradient
LAYOUTS = ("auto", "batch", "chunks")


@dataclass(frozen=True)
class UpdatePlan:
    """How every update runs, chosen once when the agent is built: from it each objective fixes its loss layout
    and gradient source, and Adam its implementation. A batch that does not fit (unequal counts on an
    equal-counts plan) is an error, never a silent change of path."""

    compiled: bool = False  # under torch.compile: gradients from torch.func, Adam in traceable maths
    equal_counts: bool = True  # every batch has the same count per task (whole-batch layouts are possible)
    row_mean: bool = False  # pooled batches: the uniform balancer averages over rows (weights n_k / N), not tasks


def gradients_of(
    loss_fn: Callable[[dict[str, Tensor]], tuple[Tensor, Any]], params: dict[str, Tensor], functional: bool
) -> tuple[Grads, Any]:
    """Gradients of the scalar of ``loss_fn(params) -> (loss, aux)`` with respect to ``params``, and ``aux``.

    ``functional``: through ``torch.func.grad`` (traceable by torch.compile as part of one graph); else
    through autograd on the live parameters (cheaper to dispatch eagerly). Nothing is written to ``.grad``.
    """
    if functional:
        return torch.func.grad(loss_fn, has_aux=True)({name: p.detach() for name, p in params.items()})
    loss, aux = loss_fn(params)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values())))), aux


def split_sample_loss(out: Union[Tensor, tuple[Tensor, dict[str, Tensor]]]) -> tuple[Tensor, dict[str, Tensor]]:
    """A sample loss's output as (per-sample losses, per-sample extra outputs; {} if it has none)."""
    return out if isinstance(out, tuple) else (out, {})


def _task_specific_names(module: nn.Module) -> set[str]:
    """Names (relative to `module`) of parameters whose task slices are used by one task only."""
    names: set[str] = set()
    for prefix, sub in module.named_modules():
        if hasattr(sub, "task_specific_parameter_names"):
            names |= {f"{prefix}.{n}" if prefix else n for n in sub.task_specific_parameter_names()}
    return names


class BalancedObjective:
    """A network's per-sample loss, averaged per task and turned into gradients by a balancer.

    ``layout`` picks how loss balancers evaluate equal-count batches: ``batch``, ``chunks``, or ``auto``
    (see the module doc); ``plan`` (eager, equal counts by default) fixes the rest (`replan`).
    """

    def __init__(
        self,
        balancer: Balancer,
        module: nn.Module,
        num_tasks: int,
        layout: str = "auto",
        plan: UpdatePlan = UpdatePlan(),
    ):
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r}; expected one of {', '.join(LAYOUTS)}")
        self.balancer = balancer
        self.module = module
        self.num_tasks = num_tasks
        specific = _task_specific_names(module)
        params = dict(module.named_parameters())
        # Shared parameters first: their columns of G are then the leading slice G[:, :num_shared] (a view).
        self.names = sorted(params, key=lambda name: name in specific)
        self._params = {name: params[name] for name in self.names}
        self.num_shared = sum(p.numel() for name, p in params.items() if name not in specific)
        self.layout = layout
        # Whether `auto` may evaluate whole mixed-task batches: yes unless a layer holds a matrix per task (a mixed
        # batch would gather one per row); per-task tables (embeddings, FiLM, mixture weights) are row lookups.
        self.mixed_batches = not any(isinstance(sub, TaskLinear) for sub in module.modules())
        # A static balancer's weights never change: known up front, never copied from the device.
        self.last_weights: Tensor | None = balancer.weights(torch.zeros(num_tasks)) if balancer.static else None
        self.needs_after_step = balancer.needs_after_step
        self._gradients = self._weighted_loss_gradients if balancer.kind == "loss" else self._balanced_gradients
        self.replan(plan)

    def replan(self, plan: UpdatePlan) -> None:
        """Fix the path from `plan`: the loss layout (`batch_layout`) and where gradients come from (`functional`)."""
        self.plan = plan
        batch = self.layout == "batch" or (self.layout == "auto" and self.mixed_batches and not plan.compiled)
        self.batch_layout = batch
        self.functional = plan.compiled and self.balancer.static

    def _chunk_loss(self, sample_loss: SampleLoss) -> Callable[[dict[str, Tensor] | None, dict[str, Tensor]], tuple]:
        """One task chunk's (mean loss, {name: mean of the detached extra outputs}), padding rows masked out."""

        def loss(params: dict[str, Tensor] | None, chunk: dict[str, Tensor]) -> tuple[Tensor, TaskAux]:
            mask = chunk["mask"]
            per_sample, aux = split_sample_loss(sample_loss(params, **{k: v for k, v in chunk.items() if k != "mask"}))

            def mean(values: Tensor) -> Tensor:
                return (values * mask).sum() / mask.sum().clamp(min=1.0)

            return mean(per_sample), {name: mean(values.detach()) for name, values in aux.items()}

        return loss

    def parameters(self) -> dict[str, Tensor]:
        """The module's parameters in G's column order: shared ones first, then task-specific ones (do not mutate)."""
        return self._params

    def task_losses(
        self,
        sample_loss: SampleLoss,
        tensors: dict[str, Tensor],
        counts: Counts | Tensor,
        params: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, TaskAux]:
        """(K,) per-task mean losses (differentiable) and extra outputs, in this objective's layout, at
        `params` (default: the module's own parameters, passed to the sample loss explicitly)."""
        return self._task_losses(sample_loss, tensors, counts, self._params if params is None else params)

    def _task_losses(
        self,
        sample_loss: SampleLoss,
        tensors: dict[str, Tensor],
        counts: Counts | Tensor,
        params: dict[str, Tensor] | None,
    ) -> tuple[Tensor, TaskAux]:
        """`task_losses` with `params` given to the sample loss as is (None: it calls the module directly,
        eagerly cheaper than functional_call)."""
        counts = task_counts(counts)
        if self.batch_layout:
            per_sample, aux = split_sample_loss(sample_loss(params, **tensors))
            means = self._task_means(counts, per_sample)
            return means(per_sample), {name: means(values.detach()) for name, values in aux.items()}
        chunk_loss = self._chunk_loss(sample_loss)
        return torch.func.vmap(lambda chunk: chunk_loss(params, chunk))(chunk_by_task(tensors, counts))

    def _task_means(self, counts: tuple[int, ...], like: Tensor) -> Callable[[Tensor], Tensor]:
        """(B,) per-sample values of a task-contiguous batch -> (K,) task means (0 for absent tasks): a reshape
        for equal counts, else sums over each task's rows (one index built on the host)."""
        if equal_count(counts) is not None:
            return lambda values: values.reshape(self.num_tasks, -1).mean(1)
        sizes = torch.tensor(counts)
        rows = torch.repeat_interleave(torch.arange(len(counts)), sizes).to(like.device, non_blocking=True)
        divisor = sizes.clamp(min=1).to(like.device, like.dtype, non_blocking=True)
        return lambda values: values.new_zeros(self.num_tasks).index_add(0, rows, values) / divisor

    def per_task_gradients(
        self, sample_loss: SampleLoss, tensors: dict[str, Tensor], counts: Counts | Tensor
    ) -> tuple[Tensor, tuple[Tensor, TaskAux]]:
        """(K, D) per-task gradients over all parameters (columns in `parameters()` order), (K,) losses and aux."""
        params = self.parameters()
        return per_task_gradients(
            self._chunk_loss(sample_loss), params, chunk_by_task(tensors, counts), return_losses=True, has_aux=True
        )

    def gradients(
        self, sample_loss: SampleLoss, tensors: dict[str, Tensor], counts: Counts | Tensor
    ) -> tuple[Grads, Tensor, TaskAux]:
        """The balanced gradient of every parameter (in `parameters()` order), the (K,) losses and aux.

        Host work happens only where the balancer needs it: none for a static balancer, the K x K solve
        (one device-to-host round trip) for gradient methods, the weight maths of famo/igb/igbv2.
        """
        return self._gradients(sample_loss, tensors, counts)

    def _weighted_loss_gradients(
        self, sample_loss: SampleLoss, tensors: dict[str, Tensor], counts: Counts | Tensor
    ) -> tuple[Grads, Tensor, TaskAux]:
        """A loss balancer: the gradient of sum_i c_i l_i (autograd, or torch.func when `functional`); under a
        `row_mean` plan the uniform balancer's c_i are the tasks' shares of the batch's rows (the mean over rows)."""
        params = self.parameters()
        row_shares = self.row_shares(counts) if self.plan.row_mean and self.balancer.name == "uniform" else None

        def weighted(values: dict[str, Tensor]) -> tuple[Tensor, tuple[Tensor, TaskAux, Tensor]]:
            losses, aux = self._task_losses(sample_loss, tensors, counts, None if values is params else values)
            weights = row_shares if row_shares is not None else self.balancer.weights(losses.detach()).to(losses)
            return (weights * losses).sum(), (losses.detach(), aux, weights.detach())

        grads, (losses, aux, weights) = gradients_of(weighted, params, self.functional)
        if not self.balancer.static:
            self.last_weights = weights
        return grads, losses, aux

    def row_shares(self, counts: Counts | Tensor) -> Tensor:
        """(K,) n_k / N: each task's share of the batch's rows (weights that turn task means into the row mean)."""
        counts = torch.as_tensor(task_counts(counts), dtype=torch.float32)
        return (counts / counts.sum()).to(next(iter(self._params.values())).device)

    def _balanced_gradients(
        self, sample_loss: SampleLoss, tensors: dict[str, Tensor], counts: Counts | Tensor
    ) -> tuple[Grads, Tensor, TaskAux]:
        """A gradient method: per-task gradients, the balancer's combination of their shared columns."""
        params = self.parameters()
        G, (losses, aux) = self.per_task_gradients(sample_loss, tensors, counts)
        direction, weights = self.balancer.combine(G[:, : self.num_shared], losses.detach())
        if self.num_shared < G.shape[1]:
            direction = torch.cat([direction, G[:, self.num_shared :].mean(0)])
        self.last_weights = None if weights is None else weights.detach()
        pieces = direction.split([p.numel() for p in params.values()])
        return {name: piece.view_as(p) for (name, p), piece in zip(params.items(), pieces)}, losses.detach(), aux

    def backward(
        self, sample_loss: SampleLoss, tensors: dict[str, Tensor], counts: Counts | Tensor
    ) -> tuple[Tensor, TaskAux]:
        """Set (overwrite) `.grad` of the module's parameters to the balanced gradient; return the (K,) losses, aux."""
        grads, losses, aux = self.gradients(sample_loss, tensors, counts)
        for name, p in self.parameters().items():
            p.grad = grads[name].detach().clone()
        return losses, aux

    @torch.no_grad()
    def after_step(
        self, sample_loss: SampleLoss, tensors: dict[str, Tensor], counts: Counts | Tensor, losses_before: Tensor
    ) -> None:
        """FAMO-style methods: re-evaluate the task losses on the same batch after the step and update."""
        if self.needs_after_step:
            self.balancer.update(losses_before, self.task_losses(sample_loss, tensors, counts)[0])

    def conflict_stats(self, sample_loss: SampleLoss, tensors: dict[str, Tensor], counts: Counts | Tensor) -> dict:
        """Cosine/conflict/norm statistics of the shared parameters' per-task gradients (for logging)."""
        gram = self.balancer.last_gram
        if gram is None:
            G = self.per_task_gradients(sample_loss, tensors, counts)[0]
            return gradient_stats(G[:, : self.num_shared])
        return gradient_stats(gram=gram)
