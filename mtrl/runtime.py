"""Run-time set-up shared by every entry point: the device, seeding and threads, and the global RNG states."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from mtrl.errors import UserError


def pick_device(name: str) -> torch.device:
    """'auto' means CUDA when present, else CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device='{name}' is not a torch device; use auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device='{name}' but CUDA is not available here; use device=cpu or device=auto")
    return device


def seed_everything(seed: int, torch_threads: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU runs are then deterministic); set torch's thread count."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch_threads > 0:
        torch.set_num_threads(torch_threads)


def rng_states() -> dict[str, Any]:
    """The global RNG states, for checkpoints."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
