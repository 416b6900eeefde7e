"""Configuration helpers: Hydra resolvers, value checks with one-line errors, device and seeding."""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from mtrl.errors import UserError


def _default_run_dir(run_dir: Any, resume: Any, tasks: Any, seed: Any) -> str:
    """Hydra's run dir: `run_dir`, else the resumed run, else runs/<time>_<tasks>_s<seed>."""
    if run_dir not in (None, "None", "null"):
        return str(run_dir)
    if resume not in (None, "None", "null"):
        return str(resume)
    label = tasks if isinstance(tasks, str) else f"{len(tasks)}tasks"
    return f"runs/{time.strftime('%Y-%m-%d_%H-%M-%S')}_{label}_s{seed}"


if not OmegaConf.has_resolver("mtrl_run_dir"):
    OmegaConf.register_new_resolver("mtrl_run_dir", _default_run_dir)


def to_plain(value: Any) -> Any:
    """An OmegaConf node as plain Python containers (other values unchanged)."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


# (key, test, allowed) for the top-level numbers of a training config.
_TRAIN_CHECKS = [
    ("total_steps", lambda v: isinstance(v, int) and v > 0, "an integer > 0"),
    ("warmup_steps", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    ("updates_per_step", lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
    ("batch_size_per_task", lambda v: isinstance(v, int) and v > 0, "an integer > 0"),
    ("replay_capacity", lambda v: isinstance(v, int) and v > 0, "an integer > 0"),
    ("eval_every", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0 = only at the end)"),
    ("eval_episodes", lambda v: v is None or (isinstance(v, int) and v > 0), "null or an integer > 0"),
    ("log_every", lambda v: isinstance(v, int) and v > 0, "an integer > 0"),
    ("checkpoint_every", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0 = only at the end)"),
    ("keep_checkpoints", lambda v: isinstance(v, int) and v > 0, "an integer > 0"),
    ("torch_threads", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0 = torch's default)"),
    ("seed", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    ("mode", lambda v: v in ("online", "offline"), "online or offline"),
]


def check_values(cfg: DictConfig, checks: list = _TRAIN_CHECKS) -> None:
    """Raise a UserError for the first value out of its allowed range."""
    for key, test, allowed in checks:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not test(value):
            raise UserError(f"{key}={value} is not allowed; expected {allowed}")


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
