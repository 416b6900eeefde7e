"""Divergence guard: a run whose losses explode or whose weights or optimiser state stop being finite ends with
a one-line error (exit status 1), never a result, and never writes a checkpoint holding non-finite values.

A metric diverges when it is non-finite or its magnitude passes ABS_LIMIT; a loss also diverges when it passes
RELATIVE_LIMIT times the median of its magnitudes at the earlier log steps. Checking every update on the host
would force a device synchronisation per update, so the guard keeps, per metric, the index of the first
diverged update as a device tensor (a few tiny ops per update) and reads it only when asked (log steps,
checkpoints, the end of the run).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from mtrl.errors import RunFailed, UserError

ABS_LIMIT = 1e8  # |metric| beyond this is an explosion, whatever the run (Meta-World returns stay below 1e4)
RELATIVE_LIMIT = 1e6  # a loss this many times its median magnitude at earlier log steps has exploded
MIN_HISTORY = 3  # log steps a loss needs before the relative test applies
ADVICE = "lower the learning rates or resume from an earlier checkpoint"


class DivergenceGuard:
    """Remembers the first diverged update per metric; `check` raises RunFailed naming it."""

    def __init__(self, task_names: list[str]):
        self.task_names = list(task_names)
        self.first_bad: dict[str, Tensor] = {}  # metric -> (K,) first bad update per task, -1 = none yet
        self.history: dict[str, list[np.ndarray]] = {}  # loss -> its (K,) magnitudes at earlier log steps

    def observe(self, metrics: Mapping[str, Tensor], update: int) -> None:
        """Record which tasks' metrics are non-finite or beyond ABS_LIMIT at update number `update` (no host sync)."""
        for name, values in metrics.items():
            first = self.first_bad.get(name)
            if first is None:
                first = self.first_bad[name] = torch.full(values.shape, -1, dtype=torch.long, device=values.device)
            values = values.detach()
            bad = ~torch.isfinite(values) | (values.abs() > ABS_LIMIT)
            first.copy_(torch.where(bad & (first < 0), update, first))

    def check_growth(self, metrics: Mapping[str, Tensor], step_unit: str, step: int) -> None:
        """At a log step: raise if a loss is RELATIVE_LIMIT times its median magnitude so far, else remember it."""
        for name, values in metrics.items():
            if "loss" not in name:
                continue
            now = np.abs(values.detach().double().cpu().numpy())
            past = self.history.setdefault(name, [])
            if len(past) >= MIN_HISTORY:
                median = np.median(np.stack(past), axis=0)
                grown = (median > 0) & (now > RELATIVE_LIMIT * median)
                if grown.any():
                    task = int(np.argmax(grown))
                    raise RunFailed(
                        f"training diverged: {name} of {self.task_names[task]} exploded to {now[task]:.3g}, "
                        f"{now[task] / median[task]:.3g} times its median {median[task]:.3g} at earlier log steps "
                        f"(at {step_unit} {step}); {ADVICE}"
                    )
            past.append(now)

    def check(self, step_unit: str, step: int) -> None:
        """Raise if any metric diverged: naming the earliest update, the metric and the task."""
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
            raise RunFailed(
                f"training diverged: {name} of {self.task_names[task]} became non-finite or passed "
                f"{ABS_LIMIT:.0e} at update {update} (stopped at {step_unit} {step}); checkpoints keep only "
                f"finite states: {ADVICE}"
            )


def first_non_finite(tree: Any, path: str = "") -> str | None:
    """The dotted path of the first floating-point tensor holding NaN or inf in a nested state, or None."""
    if torch.is_tensor(tree):
        return path if tree.is_floating_point() and not torch.isfinite(tree).all() else None
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return None
    for key, value in items:
        found = first_non_finite(value, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def check_finite_state(state: Mapping[str, Any], step_unit: str, step: int) -> None:
    """Refuse to go on (and to checkpoint) when any weight, optimiser moment or balancer state is non-finite."""
    found = first_non_finite(state)
    if found is not None:
        raise RunFailed(
            f"training diverged: {found} is non-finite at {step_unit} {step}; nothing was checkpointed: {ADVICE}"
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
