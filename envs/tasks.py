"""Benchmark and task-name resolution: mt10, mt25, mt50, mt1-<task>, or an explicit list of task names."""

from __future__ import annotations

import difflib
from typing import Sequence

import metaworld

from mtrl.errors import UserError

ALL_TASKS: tuple[str, ...] = tuple(metaworld.ALL_V3_ENVIRONMENTS)
MT10_TASKS: tuple[str, ...] = tuple(metaworld.env_dict.MT10_V3)
MT50_TASKS: tuple[str, ...] = tuple(metaworld.env_dict.MT50_V3)
MT25_TASKS: tuple[str, ...] = tuple(metaworld.env_dict.MT25_V3)  # Meta-World+'s MT25
BENCHMARKS = {"mt10": MT10_TASKS, "mt25": MT25_TASKS, "mt50": MT50_TASKS}
#: Observation and action widths of every Meta-World v3 task (what a run sizes its networks by).
OBS_DIM, ACT_DIM = 39, 4


def _check_task(name: str) -> str:
    if name in ALL_TASKS:
        return name
    if f"{name}-v3" in ALL_TASKS:  # allow the version suffix to be left off
        return f"{name}-v3"
    close = difflib.get_close_matches(name, ALL_TASKS, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UserError(
        f"unknown Meta-World task '{name}'{hint}; tasks are the 50 v3 names such as reach-v3, push-v3 "
        f"(see envs.tasks.ALL_TASKS)"
    )


def resolve_tasks(spec: str | Sequence[str]) -> tuple[str, list[str]]:
    """Return (benchmark label, ordered task names) for 'mt10', 'mt50', 'mt1-<task>' or a task list."""
    if isinstance(spec, str):
        key = spec.strip()
        if key.lower() in BENCHMARKS:
            return key.lower(), list(BENCHMARKS[key.lower()])
        if key.lower().startswith("mt1-"):
            task = _check_task(key[4:])
            return f"mt1-{task}", [task]
        if "," in key:
            return resolve_tasks([t.strip() for t in key.split(",") if t.strip()])
        raise UserError(f"unknown benchmark '{spec}'; use mt10, mt25, mt50, mt1-<task> or a list of task names")
    tasks = [_check_task(str(t)) for t in spec]
    if not tasks:
        raise UserError("env.tasks is empty; give at least one Meta-World task name")
    dupes = sorted({t for t in tasks if tasks.count(t) > 1})
    if dupes:
        raise UserError(f"task list repeats {', '.join(dupes)}; each task may appear once")
    return "custom", tasks
