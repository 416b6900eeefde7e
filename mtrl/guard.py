"""Divergence guard: a run whose losses or weights stop being finite ends with a one-line error, never a result.

Checking every update on the host would force a device synchronisation per update, so the guard keeps,
per metric, the index of the first update whose value was not finite as a device tensor (a few tiny
ops per update) and reads it only when asked (log steps, checkpoints, the end of the run).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from mtrl.errors import UserError


class DivergenceGuard:
    """Remembers the first non-finite update per metric; `check` raises a UserError naming it."""

    def __init__(self, task_names: list[str]):
        self.task_names = list(task_names)
        self.first_bad: dict[str, Tensor] = {}  # metric -> (K,) first bad update per task, -1 = none yet

    def observe(self, metrics: Mapping[str, Tensor], update: int) -> None:
        """Record which tasks' metrics are non-finite at update number `update` (no host sync)."""
        for name, values in metrics.items():
            first = self.first_bad.get(name)
            if first is None:
                first = self.first_bad[name] = torch.full(values.shape, -1, dtype=torch.long, device=values.device)
            bad = ~torch.isfinite(values.detach())
            first.copy_(torch.where(bad & (first < 0), update, first))

    def check(self, step_unit: str, step: int) -> None:
        """Raise if any metric went non-finite: naming the earliest update, the metric and the task."""
        worst: tuple[int, str, int] | None = None
        for name, first in self.first_bad.items():
            values = first.cpu()
            hit = values >= 0
            if hit.any():
                index = int(torch.argmin(torch.where(hit, values, values.max() + 1)))
                candidate = (int(values[index]), name, index)
                worst = candidate if worst is None or candidate[0] < worst[0] else worst
        if worst is not None:
            update, name, task = worst
            raise UserError(
                f"training diverged: {name} of {self.task_names[task]} became non-finite at update "
                f"{update} (stopped at {step_unit} {step}); checkpoints keep only finite weights: "
                f"lower the learning rates or resume from an earlier checkpoint"
            )


def check_finite_weights(modules: Mapping[str, nn.Module], step_unit: str, step: int) -> None:
    """Refuse to go on (and to checkpoint) when any parameter is non-finite."""
    for owner, module in modules.items():
        for name, param in module.named_parameters():
            if not torch.isfinite(param).all():
                raise UserError(
                    f"training diverged: {owner} weight {name} is non-finite at {step_unit} {step}; "
                    f"nothing was checkpointed: lower the learning rates or resume from an earlier "
                    f"checkpoint"
                )


def check_actions(actions: np.ndarray, where: str) -> np.ndarray:
    """`actions` ((N, act_dim) or one (act_dim,)) unchanged if all finite; otherwise a UserError naming `where`,
    so a diverged policy is neither stepped in MuJoCo (whose NaN warnings flood its log) nor scored nor stored."""
    rows = np.atleast_2d(actions)
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        raise UserError(
            f"{where}: the policy produced non-finite actions (NaN or inf) in {int(bad.sum())} of "
            f"{len(rows)} envs; nothing is scored or stored from a diverged policy: use an earlier "
            f"checkpoint or retrain with smaller learning rates"
        )
    return actions
