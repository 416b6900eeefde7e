"""Sweeps (`python train.py -m ...`): one deterministic run directory per job, finished runs skipped.

Every job of a Hydra multirun writes to `hydra.sweep.dir/hydra.sweep.subdir`, which `configs/train.yaml` sets
to `multirun/<sweep.name>/<job name>`, the job name being the job's own overrides, sorted by key
(`balancer=pcgrad,experiment=mt10,seed=2`; keys in `sweep.exclude_keys` and `sweep.*` left out). Running the
same sweep again therefore maps every job to the directory it wrote before, and `prepare_job` (called by
`mtrl.cli.run_train` before training) decides what the job does there:

- finished run -> skipped. A run is *finished* when its newest checkpoint is at step >= total_steps and the
  evaluation of that step (`eval/step_<N>.json`) was written: exactly what the trainer leaves after its
  last step (a run stopped by Ctrl-C/SIGTERM or killed part-way has no such pair);
- unfinished run with a checkpoint -> resumed from it (`resume=<run dir>`), when `sweep.resume_unfinished`;
- otherwise -> trained from scratch.

The launcher decides where jobs run (`hydra/launcher=joblib`: a local process pool; `hydra/launcher=ray`:
a Ray cluster), not the code, so moving a sweep to a cluster is a launcher setting.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from mtrl.errors import UserError
from mtrl.io.checkpoint import list_checkpoints

_STEP = re.compile(r"^step_(\d+)\.pt$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+@%-]")
MAX_NAME = 200  # bytes; file systems allow 255
DEFAULT_NAME = "defaults"  # the job name when a job has no overrides of its own


def override_key(override: str) -> str:
    """The config key an override sets: `+a.b=1` -> `a.b`, `~a` -> `a`, `hydra/launcher=x` -> `hydra/launcher`."""
    key = override.split("=", 1)[0].strip()
    return key.lstrip("+~")


def job_name(overrides: Iterable[str], exclude_keys: Iterable[str] = ()) -> str:
    """A directory name made of a job's overrides, sorted by key, without excluded keys and `sweep.*` keys.

    Characters other than letters, digits and `._=,+@%-` become `_`; a name longer than MAX_NAME bytes is cut
    and ends in a hash of the full name, so distinct jobs keep distinct names.
    """
    excluded = set(exclude_keys or ())
    kept = []
    for item in overrides:
        item = str(item)
        key = override_key(item)
        if key in excluded or key == "sweep" or key.startswith("sweep.") or key.startswith("hydra"):
            continue
        kept.append((key, item))
    if not kept:
        return DEFAULT_NAME
    name = _UNSAFE.sub("_", ",".join(item for _, item in sorted(kept)))
    if len(name.encode()) > MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: MAX_NAME - 12]}_{digest}"
    return name


@dataclass
class RunStatus:
    """What a run directory holds: its newest checkpoint step and whether that step was evaluated."""

    run_dir: Path
    checkpoint_step: int | None
    evaluated: bool

    def finished(self, total_steps: int) -> bool:
        return self.checkpoint_step is not None and self.checkpoint_step >= total_steps and self.evaluated


def run_status(run_dir: Path) -> RunStatus:
    run_dir = Path(run_dir)
    found = list_checkpoints(run_dir)
    step = int(_STEP.match(found[-1].name).group(1)) if found else None
    evaluated = step is not None and (run_dir / "eval" / f"step_{step:012d}.json").is_file()
    return RunStatus(run_dir, step, evaluated)


def is_finished(run_dir: Path, total_steps: int | None = None) -> bool:
    """Whether `run_dir` holds a finished run (total_steps defaults to the one in its config.yaml)."""
    if total_steps is None:
        config = Path(run_dir) / "config.yaml"
        if not config.is_file():
            return False
        total_steps = (yaml.safe_load(config.read_text()) or {}).get("total_steps")
        if not isinstance(total_steps, int):
            return False
    return run_status(run_dir).finished(total_steps)


def prepare_job(raw: dict[str, Any], run_dir: Path, multirun: bool) -> dict[str, Any] | None:
    """The config (a plain resolved mapping) a job should train with, or None when its directory holds a
    finished run (skip it). Only sweep jobs (`multirun=True`) are skipped or resumed; single runs come back as
    they are."""
    if not multirun:
        return raw
    options = raw.get("sweep") or {}
    skip = options.get("skip_finished", True)
    resume = options.get("resume_unfinished", True)
    status = run_status(run_dir)
    if skip and status.finished(raw["total_steps"]):
        print(
            f"skipping {run_dir}: it holds a finished run (checkpoint and evaluation at step "
            f"{status.checkpoint_step} >= total_steps={raw['total_steps']})",
            flush=True,
        )
        return None
    if resume and status.checkpoint_step is not None and raw.get("resume") is None:
        _check_same_tasks(raw, run_dir)
        print(f"resuming {run_dir} from its checkpoint at step {status.checkpoint_step}", flush=True)
        return {**raw, "resume": str(run_dir)}
    return raw


def _check_same_tasks(raw: dict[str, Any], run_dir: Path) -> None:
    """Refuse to resume a directory that another configuration wrote (e.g. a sweep name reused)."""
    env_file = Path(run_dir) / "env.json"
    if not env_file.is_file():
        return
    from envs.tasks import resolve_tasks

    saved = json.loads(env_file.read_text()).get("tasks")
    _, wanted = resolve_tasks(raw["env"]["tasks"])
    if saved != wanted:
        raise UserError(
            f"sweep job directory {run_dir} holds a run on tasks {saved}, this job trains on {wanted}; "
            f"use another sweep.name or hydra.sweep.dir"
        )


def sweep_summary(sweep_dir: Path) -> dict[str, list[Path]]:
    """The run directories under a sweep directory, split into finished and unfinished."""
    out: dict[str, list[Path]] = {"finished": [], "unfinished": []}
    for config in sorted(Path(sweep_dir).rglob("config.yaml")):
        out["finished" if is_finished(config.parent) else "unfinished"].append(config.parent)
    return out


__all__ = ["job_name", "override_key", "prepare_job", "run_status", "is_finished", "RunStatus", "sweep_summary"]
