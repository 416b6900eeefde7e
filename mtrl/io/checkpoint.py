"""Checkpoints: one file per save holding the whole training state, written atomically, last N kept.

`checkpoints/step_<N>.pt` are the newest `keep` saves; `checkpoints/best.pt` (when a run keeps one)
is the save with the best evaluation. Files are written to a temporary name, flushed, made 0644
and renamed; temporary files a killed process left behind are removed when a run starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from mtrl.errors import UserError

FORMAT = "mtrl-checkpoint"
VERSION = 1
BEST = "best.pt"
_NAME = re.compile(r"^step_(\d+)\.pt$")
_TEMPORARY = ".tmp_"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first bytes of every HDF5 file (our datasets)


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first (by step); best.pt is not among them."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def remove_temporary(run_dir: Path) -> list[Path]:
    """Delete half-written checkpoint files (a process killed while saving); returns what was removed."""
    folder = checkpoint_dir(run_dir)
    removed = [p for p in folder.glob(f"{_TEMPORARY}*") if p.is_file()] if folder.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def write_atomically(path: Path, state: dict[str, Any]) -> Path:
    """torch.save to a temporary file in the same folder, fsync, chmod 0644, rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TEMPORARY, suffix=".pt", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"format": FORMAT, "version": VERSION, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save(run_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write `state` to checkpoints/step_<step>.pt atomically, then prune to the newest `keep` files."""
    path = write_atomically(checkpoint_dir(run_dir) / f"step_{step:012d}.pt", {"step": step, **state})
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def save_best(run_dir: Path, step: int, state: dict[str, Any]) -> Path:
    """Write `state` to checkpoints/best.pt atomically (the caller decides what is best)."""
    return write_atomically(checkpoint_dir(run_dir) / BEST, {"step": step, **state})


def resolve(path: str | Path, which: str = "latest") -> Path:
    """A checkpoint file, or the latest (or best) checkpoint of a run directory."""
    path = Path(path).expanduser()
    if path.is_file():
        if which == "best" and path.name != BEST:
            raise UserError(
                f"checkpoint='{path}' is a checkpoint file, so which=best cannot choose among a run's checkpoints; "
                f"give its run directory '{run_dir_of(path)}' with which=best, or drop which=best"
            )
        return path
    if path.is_dir():
        if which == "best":
            best = checkpoint_dir(path) / BEST
            if best.is_file():
                return best
            raise UserError(f"no best checkpoint in '{path}' (runs write {best} when they evaluate); use which=latest")
        found = list_checkpoints(path) or list_checkpoints(path.parent)
        if found:
            return found[-1]
        raise UserError(f"no checkpoint found in '{path}'; expected {checkpoint_dir(path)}/step_<N>.pt")
    raise UserError(f"checkpoint '{path}' does not exist; give a run directory or a .pt checkpoint file")


def run_dir_of(path: str | Path) -> Path:
    """The run directory of a checkpoint file (its folder's parent) or of a run directory (itself)."""
    path = Path(path).expanduser()
    return path.parent.parent if path.is_file() else path


def config_hash(config: dict[str, Any]) -> str:
    """A short SHA-256 of a run's resolved config (keys sorted): equal hashes mean equal configurations."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load(
    path: str | Path, map_location: str | torch.device = "cpu", which: str = "latest"
) -> tuple[Path, dict[str, Any]]:
    """Load and validate a checkpoint; a missing, truncated or foreign file is a one-line UserError."""
    file = resolve(path, which)
    with open(file, "rb") as handle:
        if handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            raise UserError(
                f"'{file}' is an HDF5 file (an offline dataset), not a checkpoint; give a run directory or a .pt "
                f"checkpoint (a dataset trains with mode=offline dataset={file})"
            )
    try:
        state = torch.load(file, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for truncated/corrupt files
        raise UserError(
            f"checkpoint '{file}' is corrupt or unreadable ({type(err).__name__}); use another file from {file.parent}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"'{file}' is not an mtrl checkpoint (expected format '{FORMAT}')")
    if state.get("version") != VERSION:
        raise UserError(f"checkpoint '{file}' has format version {state.get('version')}; this mtrl reads {VERSION}")
    return file, state
