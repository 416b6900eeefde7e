"""The one place where per-task losses become parameter gradients: a network's loss through a balancer.

Loss-weighting methods (uniform, famo, igb) backpropagate sum_i c_i l_i. Gradient methods get the
(K, D) per-task gradients from one `vmap(grad)` pass over task chunks of the batch, combine the
columns of the shared parameters, and give task-specific parameters (per-task heads, FiLM scales, ...)
their mean-loss gradient: their task slices never conflict. Both evaluate the batch one task chunk
at a time under vmap, so per-task layers apply each task's own matrices (a batched matmul) rather
than handling a mixed-task batch.
"""

from __future__ import annotations

from typing import Callable, Union

import torch
from torch import Tensor, nn

from mtrl.balancers.base import Balancer
from mtrl.balancers.stats import gradient_stats
from mtrl.balancers.task_gradients import per_task_gradients, write_direction
from mtrl.batch import chunk_by_task

# (params, **tensors) -> per-sample losses (B,), or (losses, {name: per-sample values (B,)}) whose
# per-task means come back from the objective alongside the losses (e.g. SAC's log-probabilities).
SampleLoss = Callable[..., Union[Tensor, tuple[Tensor, dict[str, Tensor]]]]
TaskAux = dict[str, Tensor]  # name -> (K,) per-task means of a sample loss's extra outputs


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
    """A network's per-sample loss, averaged per task and turned into `.grad` by a balancer."""

    def __init__(self, balancer: Balancer, module: nn.Module, num_tasks: int):
        self.balancer = balancer
        self.module = module
        self.num_tasks = num_tasks
        specific = _task_specific_names(module)
        params = dict(module.named_parameters())
        # Shared parameters first: their columns of G are then the leading slice G[:, :num_shared] (a view).
        self.names = sorted(params, key=lambda name: name in specific)
        self.num_shared = sum(p.numel() for name, p in params.items() if name not in specific)
        self.last_weights: Tensor | None = None
        self.needs_after_step = balancer.needs_after_step

    def _chunk_loss(self, sample_loss: SampleLoss) -> Callable[[dict[str, Tensor], dict[str, Tensor]], tuple]:
        """One task chunk's (mean loss, {name: mean of the detached extra outputs}), padding rows masked out."""
        def loss(params: dict[str, Tensor], chunk: dict[str, Tensor]) -> tuple[Tensor, TaskAux]:
            mask = chunk["mask"]
            per_sample, aux = split_sample_loss(sample_loss(params, **{k: v for k, v in chunk.items() if k != "mask"}))

            def mean(values: Tensor) -> Tensor:
                return (values * mask).sum() / mask.sum().clamp(min=1.0)

            return mean(per_sample), {name: mean(values.detach()) for name, values in aux.items()}

        return loss

    def parameters(self) -> dict[str, Tensor]:
        """The module's parameters in G's column order: shared ones first, then task-specific ones."""
        params = dict(self.module.named_parameters())
        return {name: params[name] for name in self.names}

    def task_losses(self, sample_loss: SampleLoss, tensors: dict[str, Tensor], counts: Tensor,
                    params: dict[str, Tensor] | None = None) -> tuple[Tensor, TaskAux]:
        """(K,) per-task mean losses (differentiable) and extra outputs, evaluated chunk by chunk under vmap.

        Each chunk is one task, so per-task layers apply that task's matrix to its rows (one batched
        matmul) instead of handling a mixed-task batch.
        """
        params = self.parameters() if params is None else params
        chunks = chunk_by_task(tensors, counts)
        return torch.func.vmap(self._chunk_loss(sample_loss), in_dims=(None, 0))(params, chunks)

    def per_task_gradients(self, sample_loss: SampleLoss, tensors: dict[str, Tensor],
                           counts: Tensor) -> tuple[Tensor, tuple[Tensor, TaskAux]]:
        """(K, D) per-task gradients over all parameters (columns in `parameters()` order), (K,) losses and aux."""
        params = self.parameters()
        return per_task_gradients(self._chunk_loss(sample_loss), params, chunk_by_task(tensors, counts),
                                  return_losses=True, has_aux=True)

    def backward(self, sample_loss: SampleLoss, tensors: dict[str, Tensor], counts: Tensor) -> tuple[Tensor, TaskAux]:
        """Set `.grad` of the module's parameters from the balanced per-task losses; return those (K,) losses and aux."""
        params = self.parameters()
        if self.balancer.kind == "loss":
            losses, aux = self.task_losses(sample_loss, tensors, counts, params)
            weights = self.balancer.weights(losses.detach()).to(losses)
            (weights * losses).sum().backward()
            self.last_weights = weights.detach()
            return losses.detach(), aux
        G, (losses, aux) = self.per_task_gradients(sample_loss, tensors, counts)
        direction, weights = self.balancer.combine(G[:, : self.num_shared], losses.detach())
        if self.num_shared < G.shape[1]:
            direction = torch.cat([direction, G[:, self.num_shared :].mean(0)])
        write_direction(direction, list(params.values()))
        self.last_weights = None if weights is None else weights.detach()
        return losses.detach(), aux

    @torch.no_grad()
    def after_step(self, sample_loss: SampleLoss, tensors: dict[str, Tensor], counts: Tensor,
                   losses_before: Tensor) -> None:
        """FAMO-style methods: re-evaluate the task losses on the same batch after the step and update."""
        if self.needs_after_step:
            self.balancer.update(losses_before, self.task_losses(sample_loss, tensors, counts)[0])

    def conflict_stats(self, sample_loss: SampleLoss, tensors: dict[str, Tensor], counts: Tensor) -> dict:
        """Cosine/conflict/norm statistics of the shared parameters' per-task gradients (for logging)."""
        gram = self.balancer.last_gram
        if gram is None:
            G = self.per_task_gradients(sample_loss, tensors, counts)[0]
            return gradient_stats(G[:, : self.num_shared])
        return gradient_stats(gram=gram)
