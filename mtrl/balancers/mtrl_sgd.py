"""The weight solver of the balancer authors' Meta-World code (``variant=mtrl`` of CAGrad and FairGrad).

Their forks of facebookresearch/mtrl solve the small K x K weight problem with a fixed number of
``torch.optim.SGD`` steps (momentum, no dampening, no Nesterov) and keep the evaluated iterate with
the lowest objective, all in the dtype of the gradients on the CPU. This module reproduces that loop
with an analytic gradient instead of autograd (same maths, no graph per step).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from mtrl.balancers.base import GradientBalancer

#: torch.nn.utils.clip_grad_norm_ adds this to the norm before dividing.
CLIP_EPS = 1e-6

ValueAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]


def weights_on_native_gram(balancer: GradientBalancer, G: Tensor, solve: Callable[[Tensor], Tensor]) -> Tensor:
    """float64 ``solve(G G^T)`` with G G^T in G's dtype on the CPU, as the authors' ``grads.mm(grads.t()).cpu()``.

    Also records the Gram matrix as ``balancer.last_gram`` (float64), like every gradient balancer.
    """
    gram = (G @ G.T).detach().cpu()
    balancer.last_gram = gram.to(torch.float64)
    return solve(gram).to(torch.float64)


def best_sgd_iterate(
    x0: Tensor,
    value_and_grad: ValueAndGrad,
    *,
    steps: int,
    lr: float,
    momentum: float,
    evaluate_final: bool,
    max_grad_norm: Optional[float] = None,
    lower: Optional[float] = None,
) -> Optional[Tensor]:
    """The iterate of SGD from ``x0`` with the lowest objective among those evaluated.

    Each of the ``steps`` rounds evaluates (value, gradient) at the current x, remembers x if the value
    is below every earlier one, optionally clips the gradient to norm ``max_grad_norm`` (clip_grad_norm_
    semantics), takes one momentum-SGD step and optionally clamps x >= ``lower``. ``evaluate_final``
    also evaluates the point after the last step. Returns None when no value was finite and below inf.
    """
    x, buf, best, best_x = x0.clone(), None, math.inf, None
    for i in range(steps + int(evaluate_final)):
        value, grad = value_and_grad(x)
        if float(value) < best:
            best, best_x = float(value), x.clone()
        if i == steps:
            break
        if max_grad_norm is not None:
            grad = grad * torch.clamp(max_grad_norm / (grad.norm() + CLIP_EPS), max=1.0)
        buf = grad.clone() if buf is None else buf.mul(momentum).add(grad)
        x = x.add(buf, alpha=-lr)
        if lower is not None:
            x = x.clamp(min=lower)
    return best_x
