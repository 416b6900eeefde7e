"""Diagnostics of the per-task gradients (conflict, alignment, norms) from one Gram matrix."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from mtrl.balancers.base import gram_matrix


def gradient_stats(G: Optional[Tensor] = None, *, gram: Optional[Tensor] = None) -> dict[str, Any]:
    """cosine (K, K), mean_cosine (off-diagonal mean), conflict_fraction (pairs i<j with g_i.g_j < 0), norms (K,).

    Pass ``gram`` (e.g. a gradient balancer's ``last_gram``) to skip the G G^T product. Tensors are
    float64 on the CPU; a zero gradient has cosine 0 with everything (itself included). With K = 1
    there are no pairs: mean_cosine is nan and conflict_fraction 0.0.
    """
    if gram is None:
        if G is None:
            raise ValueError("gradient_stats needs G or gram")
        gram = gram_matrix(G)
    gram = gram.detach().to(device="cpu", dtype=torch.float64)
    k = gram.shape[0]
    norms = gram.diagonal().clamp_min(0.0).sqrt()
    outer = torch.outer(norms, norms)
    cosine = torch.where(outer > 0, gram / torch.where(outer > 0, outer, 1.0), 0.0).clamp(-1.0, 1.0)
    upper = torch.triu_indices(k, k, offset=1)
    pairs = k * (k - 1) // 2
    mean_cosine = float(cosine[upper[0], upper[1]].mean()) if pairs else float("nan")
    conflict = float((gram[upper[0], upper[1]] < 0).sum()) / pairs if pairs else 0.0
    return {"cosine": cosine, "mean_cosine": mean_cosine, "conflict_fraction": conflict, "norms": norms}
