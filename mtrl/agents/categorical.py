"""The categorical (distributional) critic's maths: a fixed support of atoms, the C51 projection, the loss.

A categorical critic outputs logits over `num_atoms` values evenly spaced on [v_min, v_max]. Its target is the
distribution of r + discount (z - alpha log pi') under the target critics' probabilities, projected back onto
the support (Bellemare et al. 2017, C51; BRC's form, naumix/BiggerRegularizedCategorical jaxrl/agent/update.py:
40-58: atoms clipped to the support, each one's mass split between its two neighbours, all of it on the atom when
it lands exactly on one). Everything here is a pure function of tensors, safe under vmap.
"""

from __future__ import annotations

import torch
from torch import Tensor


def support(v_min: float, v_max: float, num_atoms: int, device: torch.device | None = None) -> Tensor:
    """(num_atoms,) the atoms' values, evenly spaced from v_min to v_max."""
    return torch.linspace(v_min, v_max, num_atoms, device=device)


def project(values: Tensor, probs: Tensor, v_min: float, v_max: float) -> Tensor:
    """The distribution with mass `probs` (..., N) at `values` (..., N) projected onto the N-atom support of
    [v_min, v_max]: each value is clipped to the support and its mass split linearly between the atoms below
    and above it (all on one atom when it lands on it). Mass is conserved row by row."""
    num_atoms = probs.shape[-1]
    delta = (v_max - v_min) / (num_atoms - 1)
    position = (values.clamp(v_min, v_max) - v_min) / delta
    lower, upper = position.floor(), position.ceil()
    lower_mass = probs * (upper + (lower == upper).to(probs.dtype) - position)
    upper_mass = probs * (position - lower)
    out = torch.zeros_like(probs)
    out = out.scatter_add(-1, lower.long().clamp(0, num_atoms - 1), lower_mass)
    return out.scatter_add(-1, upper.long().clamp(0, num_atoms - 1), upper_mass)


def mean_probs(logits_1: Tensor, logits_2: Tensor) -> Tensor:
    """The twin critics' probabilities averaged (how BRC combines its ensemble, update.py:19-20,33-34)."""
    return 0.5 * (torch.softmax(logits_1, dim=-1) + torch.softmax(logits_2, dim=-1))


def expected_value(probs: Tensor, atoms: Tensor) -> Tensor:
    """(...,) the mean of the distribution `probs` (..., N) over `atoms` (N,)."""
    return (probs * atoms).sum(-1)


def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """(...,) -sum target log softmax(logits): the categorical critic's loss per sample, never negative."""
    return -(target * torch.log_softmax(logits, dim=-1)).sum(-1)


__all__ = ["support", "project", "mean_probs", "expected_value", "cross_entropy"]
