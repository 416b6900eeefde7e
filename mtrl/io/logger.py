"""Run logging: TensorBoard scalars under <run_dir>/tb (and/or W&B, `logger=`) and a tqdm progress bar in env steps.

In sweep jobs (Hydra multirun) parallel jobs would redraw their bars over each other, so the command line
switches every RunLogger of the process to line mode (`RunLogger.line_mode`): one line per log period,
prefixed with the job's name, and the run's messages carry the same prefix.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


@dataclass
class LineMode:
    """Progress as lines: one every `every` steps (the run's log period), each prefixed with `[label]`."""

    label: str
    every: int


class ProgressLines:
    """The part of tqdm's interface RunLogger uses, printing a status line per period instead of a bar."""

    def __init__(self, mode: LineMode, total: int, initial: int, unit: str, quiet: bool):
        self.mode, self.total, self.n, self.unit, self.quiet = mode, total, initial, unit, quiet
        self.postfix: dict[str, Any] = {}
        self.mark = (time.perf_counter(), initial)

    def update(self, steps: int) -> None:
        before, self.n = self.n, self.n + steps
        if not self.quiet and (self.n // self.mode.every > before // self.mode.every or before < self.total <= self.n):
            self.write(self.status())

    def status(self) -> str:
        """`step N/T (p%), rate, eta` and the postfix, with the rate since the previous line."""
        now, (start, start_n) = time.perf_counter(), self.mark
        self.mark = (now, self.n)
        rate = (self.n - start_n) / max(now - start, 1e-9)
        eta = tqdm.format_interval((self.total - self.n) / rate) if rate > 0 else "?"
        extra = "".join(f", {key} {value}" for key, value in self.postfix.items())
        return (
            f"{self.unit} {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f}%), "
            f"{rate:.0f} {self.unit}/s, eta {eta}{extra}"
        )

    def set_postfix(self, postfix: dict[str, Any], refresh: bool = False) -> None:
        self.postfix = dict(postfix)

    def write(self, text: str) -> None:
        print(f"[{self.mode.label}] {text}", flush=True)

    def close(self) -> None:
        """Nothing to clear (tqdm's interface)."""


#: Where scalars go: TensorBoard (<run_dir>/tb), Weights & Biases (mtrl/io/wandb_writer.py), or both.
LOGGERS = ("tensorboard", "wandb", "both")


class Writers:
    """One SummaryWriter-like sink over several (TensorBoard and W&B): every call goes to each."""

    def __init__(self, sinks: list[Any]):
        self.sinks = sinks

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        for sink in self.sinks:
            sink.add_scalar(tag, value, step)

    def add_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        for sink in self.sinks:
            sink.add_image(tag, image, step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def make_writers(run_dir: Path, logger: str, config: dict[str, Any] | None) -> Writers:
    """The sinks `logger` names (tensorboard, wandb or both); W&B logs `config` as the run's config."""
    sinks: list[Any] = []
    if logger in ("tensorboard", "both"):
        sinks.append(SummaryWriter(log_dir=str(Path(run_dir) / "tb")))
    if logger in ("wandb", "both"):
        from mtrl.io.wandb_writer import WandbWriter

        sinks.append(WandbWriter(Path(run_dir), config or {}))
    return Writers(sinks)


class RunLogger:
    """Scalar writers + progress bar (steps/s, recent success, ETA) + recent per-task episode stats."""

    #: Set by the command line in sweep jobs: progress lines naming the job instead of a bar (module doc).
    line_mode: ClassVar[LineMode | None] = None

    def __init__(
        self,
        run_dir: Path,
        task_names: Sequence[str],
        total_steps: int,
        start_step: int,
        progress: bool,
        window: int = 10,
        unit: str = "step",
        description: str = "train",
        logger: str = "tensorboard",
        config: dict[str, Any] | None = None,
    ):
        """`logger`: tensorboard, wandb or both; `config` (the run's resolved config) is what W&B records."""
        self.writer = make_writers(Path(run_dir), logger, config)
        self.task_names = list(task_names)
        if self.line_mode is not None:
            self.bar = ProgressLines(self.line_mode, total_steps, start_step, unit, quiet=not progress)
        else:
            self.bar = tqdm(
                total=total_steps,
                initial=start_step,
                unit=unit,
                dynamic_ncols=True,
                disable=not progress,
                desc=description,
            )
        self.recent_success = [deque(maxlen=window) for _ in self.task_names]
        self.recent_return = [deque(maxlen=window) for _ in self.task_names]

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, float(value), step)

    def per_task(self, prefix: str, values: torch.Tensor | np.ndarray | Sequence[float], step: int) -> None:
        """Log a K-vector as <prefix>/<task> plus its mean as <prefix>/mean."""
        values = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
        for name, value in zip(self.task_names, values):
            self.writer.add_scalar(f"{prefix}/{name}", value, step)
        self.writer.add_scalar(f"{prefix}/mean", values.mean(), step)

    def metrics(self, prefix: str, values: dict[str, Any], step: int) -> None:
        """Log each per-task metric vector as <prefix>/<name>/<task> (and its mean)."""
        for name, vector in values.items():
            self.per_task(f"{prefix}/{name}", vector, step)

    def balancer(self, diagnostics: dict[str, dict[str, Any]], step: int) -> None:
        """Task weights, the method's own values and, where measured, gradient norms, mean cosine, conflicting-pair
        fraction and the K x K cosine image."""
        for net, stats in diagnostics.items():
            if stats["weights"] is not None:
                self.per_task(f"balancer/{net}/weight", stats["weights"], step)
            for name, value in stats.get("extra", {}).items():
                if value is None:
                    continue
                if isinstance(value, (int, float)):
                    self.scalar(f"balancer/{net}/{name}", value, step)
                else:
                    self.per_task(f"balancer/{net}/{name}", value, step)
            if "cosine" in stats:
                self.per_task(f"balancer/{net}/grad_norm", stats["norms"], step)
                self.scalar(f"balancer/{net}/mean_cosine", stats["mean_cosine"], step)
                self.scalar(f"balancer/{net}/conflict_fraction", stats["conflict_fraction"], step)
                image = ((stats["cosine"].float() + 1.0) / 2.0).unsqueeze(0)  # [-1, 1] -> [0, 1], CHW
                self.writer.add_image(f"balancer/{net}/cosine", image, step)

    def episode(self, task_id: int, ret: float, success: bool, step: int) -> None:
        """Record one finished training episode."""
        name = self.task_names[task_id]
        self.writer.add_scalar(f"train/success/{name}", float(success), step)
        self.writer.add_scalar(f"train/return/{name}", ret, step)
        self.recent_success[task_id].append(float(success))
        self.recent_return[task_id].append(ret)

    def recent_mean_success(self) -> float | None:
        means = [np.mean(d) for d in self.recent_success if d]
        return float(np.mean(means)) if means else None

    def advance(self, steps: int) -> None:
        self.bar.update(steps)

    def show(self, **postfix: float | str) -> None:
        self.bar.set_postfix(postfix, refresh=False)

    def message(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
        self.writer.close()
