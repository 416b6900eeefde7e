"""Adam on explicit gradients: torch's own Adam maths, without `.grad` and without `Adam.step`'s graph breaks.

Agents keep `torch.optim.Adam` objects (their state dicts are the checkpoint format) but step them
through torch's functional Adam (`torch.optim.adam.adam`, the function `Adam.step` itself calls) with
gradients passed in. That is what lets `torch.compile` trace an entire update, optimiser steps
included, as one graph: `Adam.step` deliberately breaks the graph. Eagerly the implementation is
torch's fused kernel (CUDA: also `capturable`, its state on the device; CPU: from torch 2.4, else
`foreach`); compiled steps run the `foreach` maths, which torch.compile traces and fuses itself (it does
not trace the fused kernels), with the same state (on the device on CUDA, safe inside CUDA graphs).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import Tensor
from torch.optim.adam import adam as functional_adam

#: The implementation flags of an Adam that follow the device rather than the checkpoint.
_DEVICE_FLAGS = ("foreach", "fused", "capturable")


def adam_flags(device: torch.device) -> dict[str, bool]:
    """The fastest Adam implementation for `device`: fused (CUDA: capturable too), or foreach where torch
    has no fused kernel for the device (CPU before torch 2.4)."""
    if device.type == "cuda":
        return {"fused": True, "capturable": True}
    try:
        torch.optim.Adam([torch.zeros(1, device=device, requires_grad=True)], fused=True)
    except RuntimeError:
        return {"foreach": True}
    return {"fused": True}


def make_adam(
    params: Iterable[Tensor],
    lr: float,
    betas: tuple[float, float],
    device: torch.device,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> torch.optim.Adam:
    """Adam for parameters on `device`, its state created at once (a compiled step must find it there);
    `weight_decay` is decoupled (AdamW's p <- p - lr (wd p + Adam's step), optax.adamw's too)."""
    params = list(params)
    optim = torch.optim.Adam(
        params,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        decoupled_weight_decay=weight_decay > 0,
        **adam_flags(device),
    )
    for p in params:
        adam_state(optim, p)
    return optim


def adam_state(optim: torch.optim.Adam, p: Tensor) -> dict[str, Tensor]:
    """The Adam state of `p`, created as `Adam.step` would lazily create it (step on the device when
    capturable or fused, else a CPU scalar)."""
    state = optim.state[p]
    if not state:
        group = optim.param_groups[0]
        on_device = group["capturable"] or group["fused"]
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if on_device else "cpu")
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return state


def load_adam(optim: torch.optim.Adam, state: Mapping[str, Any]) -> None:
    """Load a saved Adam state into the existing state tensors, keeping this device's implementation.

    The checkpoint may come from another device (other flags, `step` elsewhere); copying in place keeps
    the tensors a compiled update (and its CUDA graphs) already uses.
    """
    params = [p for group in optim.param_groups for p in group["params"]]
    flags = {key: optim.param_groups[0][key] for key in _DEVICE_FLAGS}
    current = {p: dict(adam_state(optim, p)) for p in params}
    optim.load_state_dict(state)
    for group in optim.param_groups:
        group.update(flags)
    with torch.no_grad():
        for p in params:
            loaded = optim.state[p]
            for key, tensor in current[p].items():
                if key in loaded:
                    tensor.copy_(loaded[key])
            optim.state[p] = current[p]


@torch.no_grad()
def adam_step(optim: torch.optim.Adam, params: list[Tensor], grads: list[Tensor], traced: bool = False) -> None:
    """One step of `optim` (a single-group Adam) on `params` with the given gradients, in place; `traced`: the
    update is compiled (the plan says so), so the step runs the maths torch.compile traces."""
    group = optim.param_groups[0]
    # autograd.grad can return a gradient in another memory layout than its parameter's (e.g. transposed for
    # x @ w.t()); the fused kernel assumes the parameter's, so such a gradient is made contiguous first (as
    # .grad accumulation would).
    grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
    states = [optim.state[p] for p in params] if traced else [adam_state(optim, p) for p in params]
    # torch.compile does not trace the fused kernels: a compiled step runs the foreach maths, which it fuses itself.
    fused = bool(group["fused"]) and not traced
    foreach = bool(group["foreach"]) or (bool(group["fused"]) and traced)
    extra = {"decoupled_weight_decay": group["decoupled_weight_decay"]} if "decoupled_weight_decay" in group else {}
    functional_adam(
        params,
        grads,
        [s["exp_avg"] for s in states],
        [s["exp_avg_sq"] for s in states],
        [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else [],
        [s["step"] for s in states],
        foreach=foreach,
        capturable=group["capturable"],
        differentiable=False,
        fused=fused,
        has_complex=False,
        amsgrad=group["amsgrad"],
        beta1=group["betas"][0],
        beta2=group["betas"][1],
        lr=group["lr"],
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=group["maximize"],
        **extra,
    )


@torch.no_grad()
def clip_norm_(grads: list[Tensor], max_norm: float, traced: bool = False) -> None:
    """Scale `grads` in place so that their joint 2-norm is at most `max_norm` (clip_grad_norm_'s maths,
    without a host read of the norm). `traced`: the norm from sums of squares, which Inductor fuses into its
    own kernels (it runs `_foreach_norm` as an eager fallback, one call per tensor)."""
    if traced:
        total = torch.stack([g.square().sum() for g in grads]).sum().sqrt()
    else:
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp(max=1.0))
