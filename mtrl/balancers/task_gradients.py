"""Per-task gradients of the shared parameters: one vectorised pass (vmap of grad), a loop reference,
and the flatten / write-back helpers between parameter lists and (D,) vectors."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

Params = Union[Mapping[str, Tensor], Sequence[Tensor]]


def _tensors(params: Params) -> list[Tensor]:
    """The parameter tensors of a name->tensor mapping (in its order) or of a sequence."""
    return list(params.values()) if isinstance(params, Mapping) else list(params)


def flatten(grads: Iterable[Tensor], *, batch_dims: int = 0) -> Tensor:
    """Concatenate tensors into one vector, keeping the first ``batch_dims`` dims: (*batch, D)."""
    return torch.cat([g.reshape(*g.shape[:batch_dims], -1) for g in grads], dim=batch_dims)


def per_task_gradients(
    loss_fn: Callable[[dict[str, Tensor], Any], Tensor],
    params: Mapping[str, Tensor],
    task_batch: Any,
    *,
    chunk_size: Optional[int] = None,
    randomness: str = "error",
    return_losses: bool = False,
    has_aux: bool = False,
) -> Union[Tensor, tuple[Tensor, Any]]:
    """(K, D) gradients of ``loss_fn(params, batch_k)`` for each task k, from one ``vmap(grad)`` pass.

    ``task_batch`` is a pytree whose leaves have leading dim K (one chunk per task; a "mask" entry
    is just another leaf for ``loss_fn`` to use). Rows are flattened in the order of ``params``;
    parameters are detached first (no graph is built through them). ``chunk_size`` bounds vmap's
    memory; ``randomness`` is vmap's ("error" by default: pre-sample noise into the batch, or pass
    "different" for independent draws per task). ``return_losses=True`` also returns the (K,) losses;
    ``has_aux=True`` means ``loss_fn`` returns (loss, aux) as in ``torch.func.grad``: the aux (leaves
    stacked over tasks) comes back too, as (G, aux), or as (G, (losses, aux)) with ``return_losses``.
    """
    detached = {name: p.detach() for name, p in params.items()}
    if return_losses:
        fn = torch.func.grad_and_value(loss_fn, has_aux=has_aux)
    else:
        fn = torch.func.grad(loss_fn, has_aux=has_aux)
    out = torch.func.vmap(fn, in_dims=(None, 0), chunk_size=chunk_size, randomness=randomness)(detached, task_batch)
    grads, extra = out if (return_losses or has_aux) else (out, None)
    G = flatten((grads[name] for name in detached), batch_dims=1)
    return G if extra is None else (G, extra)


def per_task_gradients_loop(task_losses: Tensor, params: Params) -> Tensor:
    """(K, D) reference: K separate ``autograd.grad`` calls on the entries of ``task_losses`` (graph kept)."""
    tensors = _tensors(params)
    rows = []
    for loss in task_losses:
        grads = torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)
        rows.append(flatten(torch.zeros_like(p) if g is None else g for g, p in zip(grads, tensors)))
    return torch.stack(rows)


def write_direction(direction: Tensor, params: Params) -> None:
    """Write a (D,) vector into ``p.grad`` of each parameter, in order: it SETS .grad (overwrites, no accumulation)."""
    tensors = _tensors(params)
    total = sum(p.numel() for p in tensors)
    if direction.dim() != 1 or direction.numel() != total:
        raise ValueError(f"write_direction: direction has shape {tuple(direction.shape)}, parameters need ({total},)")
    offset = 0
    for p in tensors:
        chunk = direction[offset : offset + p.numel()].view_as(p).to(dtype=p.dtype, device=p.device)
        if p.grad is None:
            p.grad = chunk.detach().clone()
        else:
            p.grad.copy_(chunk)
        offset += p.numel()
