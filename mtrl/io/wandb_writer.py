"""Weights & Biases as a second scalar sink beside TensorBoard (`logger=wandb|both`; the `wandb` extra).

The run is named after its run directory, keeps its files in `<run_dir>/wandb`, logs the resolved config, and
has an id derived from the run directory, so a resumed run continues the same W&B run. W&B's own settings
apply: `WANDB_MODE=offline` logs without a network (sync later with `wandb sync <run_dir>/wandb/...`),
`WANDB_PROJECT` picks the project (default: mtrl).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch


def run_id(run_dir: Path) -> str:
    """A stable W&B run id for a run directory (its absolute path's hash)."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


class WandbWriter:
    """The SummaryWriter calls RunLogger makes (add_scalar, add_image, close), sent to one W&B run."""

    def __init__(self, run_dir: Path, config: dict[str, Any]):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "mtrl"),
            name=Path(run_dir).name,
            id=run_id(run_dir),
            resume="allow",
            dir=str(run_dir),
            config=config,
            reinit="create_new",
            settings=wandb.Settings(console="off"),  # the progress bar stays ours: no capture of the terminal
        )

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.run.log({tag: float(value)}, step=int(step))

    def add_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """A CHW image in [0, 1] (the balancer's cosine matrix)."""
        pixels = (image.detach().cpu().float().clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
        self.run.log({tag: self.wandb.Image(np.ascontiguousarray(pixels))}, step=int(step))

    def close(self) -> None:
        self.run.finish()
