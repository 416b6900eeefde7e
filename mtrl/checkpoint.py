"""Checkpoints: one file per save holding the whole training state, written atomically, last N kept."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from mtrl.errors import UserError

FORMAT = "mtrl-checkpoint"
VERSION = 1
_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first (by step)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save(run_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write `state` to checkpoints/step_<step>.pt via a temp file + rename, then prune to `keep` files."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:012d}.pt"
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"format": FORMAT, "version": VERSION, "step": step, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or the latest checkpoint of a run directory."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = list_checkpoints(path) or list_checkpoints(path.parent)
        if found:
            return found[-1]
        raise UserError(f"no checkpoint found in '{path}'; expected {checkpoint_dir(path)}/step_<N>.pt")
    raise UserError(f"checkpoint '{path}' does not exist; give a run directory or a .pt checkpoint file")


def load(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]]:
    """Load and validate a checkpoint; a missing, truncated or foreign file is a one-line UserError."""
    file = resolve(path)
    try:
        state = torch.load(file, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for truncated/corrupt files
        raise UserError(f"checkpoint '{file}' is corrupt or unreadable ({type(err).__name__}); "
                        f"use another file from {file.parent}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"'{file}' is not an mtrl checkpoint (expected format '{FORMAT}')")
    if state.get("version") != VERSION:
        raise UserError(f"checkpoint '{file}' has format version {state.get('version')}; this mtrl reads {VERSION}")
    return file, state
