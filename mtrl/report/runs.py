"""Finding and reading run directories: config.yaml, env.json, eval/step_<N>.json and the TensorBoard log."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from mtrl.errors import UserError
from mtrl.train.sweep import is_finished

_EVAL = re.compile(r"^step_(\d+)\.json$")
WEIGHT_TAG = re.compile(r"^balancer/(?P<net>[^/]+)/weight/(?P<task>.+)$")
EVAL_TAG = re.compile(r"^eval/success/(?P<task>.+)$")


@dataclass
class Run:
    """One training run: its flattened config, per-step per-task evaluation success and balancer weights."""

    path: Path
    config: dict[str, Any]  # flattened: {"balancer.name": "pcgrad", "seed": 1, ...}
    tasks: list[str]
    evals: dict[int, dict[str, float]]  # env step -> task -> success rate
    protocol: str | None
    finished: bool
    weights: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)  # net -> task -> [(step, w)]
    eval_source: str = "eval json"
    returns: dict[int, float] = field(default_factory=dict)  # step -> mean return over tasks (where measured)

    @property
    def mode(self) -> str:
        """`online` (steps are environment steps) or `offline` (steps are gradient updates)."""
        return str(self.config.get("mode") or "online")

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def steps(self) -> list[int]:
        return sorted(self.evals)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values (as tuples, so they can be compared and hashed)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        if not value and prefix:
            out[prefix[:-1]] = ()
        return out
    if isinstance(value, list):
        return {prefix[:-1]: tuple(_freeze(v) for v in value)}
    return {prefix[:-1]: value}


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def is_run_dir(path: Path) -> bool:
    """A directory that train.py wrote: config.yaml plus eval/ or tb/."""
    return (path / "config.yaml").is_file() and ((path / "eval").is_dir() or (path / "tb").is_dir())


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories among `paths` and below them (a sweep directory holds one per job), sorted, unique."""
    found: list[Path] = []
    paths = list(paths)
    if not paths:
        raise UserError("no run directories given; pass run directories or a sweep directory (e.g. multirun/default)")
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise UserError(f"'{raw}' does not exist; pass run directories or a sweep directory")
        if not path.is_dir():
            raise UserError(f"'{raw}' is not a directory; pass run directories or a sweep directory")
        if is_run_dir(path):
            found.append(path.resolve())
            continue
        found.extend(
            config.parent.resolve() for config in sorted(path.rglob("config.yaml")) if is_run_dir(config.parent)
        )
    unique = sorted(set(found))
    if not unique:
        where = ", ".join(str(p) for p in paths)
        raise UserError(
            f"no run directories found under {where}; a run directory holds config.yaml and eval/ "
            f"or tb/ (what train.py writes)"
        )
    return unique


def read_evals(run_dir: Path) -> tuple[dict[int, dict[str, float]], str | None, list[str], dict[int, float]]:
    """Per-step per-task success from eval/step_<N>.json, the protocol, the task order of the files, and the
    per-step mean return over tasks (steps whose evaluation measured every task's return)."""
    evals: dict[int, dict[str, float]] = {}
    returns: dict[int, float] = {}
    protocol, order = None, []
    folder = run_dir / "eval"
    if not folder.is_dir():
        return evals, protocol, order, returns
    for file in sorted(folder.iterdir()):
        match = _EVAL.match(file.name)
        if not match:
            continue
        try:
            data = json.loads(file.read_text())
            tasks = {t["task"]: float(t["success_rate"]) for t in data["tasks"]}
            task_returns = [t.get("mean_return") for t in data["tasks"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            warnings.warn(f"skipping unreadable evaluation file {file} ({type(err).__name__})", stacklevel=2)
            continue
        step = int(match.group(1))
        evals[step] = tasks
        if task_returns and None not in task_returns:
            returns[step] = float(sum(task_returns) / len(task_returns))
        protocol = data.get("protocol", protocol)
        order = order or [t["task"] for t in data["tasks"]]
    return evals, protocol, order, returns


def read_scalars(tb_dir: Path, keep: Iterable[re.Pattern]) -> dict[str, list[tuple[int, float]]]:
    """Scalars of a TensorBoard log directory whose tags match one of `keep`, read with TensorBoard's own reader.

    All event files of the directory are read in order; values a restarted (resumed) run wrote again for
    the same step replace the earlier ones (the reader purges orphaned steps, and the last value wins).
    """
    if not tb_dir.is_dir() or not any(tb_dir.iterdir()):
        return {}
    from tensorboard.backend.event_processing import event_accumulator as ea

    guidance = {ea.SCALARS: 0, ea.IMAGES: 1, ea.AUDIO: 1, ea.HISTOGRAMS: 1, ea.COMPRESSED_HISTOGRAMS: 1, ea.TENSORS: 1}
    accumulator = ea.EventAccumulator(str(tb_dir), size_guidance=guidance)
    try:
        accumulator.Reload()
    except Exception as err:  # a truncated event file raises from deep inside TensorBoard
        warnings.warn(f"could not read TensorBoard log {tb_dir} ({type(err).__name__}: {err})", stacklevel=2)
        return {}
    keep = list(keep)
    out: dict[str, list[tuple[int, float]]] = {}
    for tag in accumulator.Tags().get("scalars", []):
        if any(pattern.match(tag) for pattern in keep):
            by_step = {event.step: float(event.value) for event in accumulator.Scalars(tag)}
            out[tag] = sorted(by_step.items())
    return out


def load_run(run_dir: Path) -> Run:
    """Read one run directory (eval JSONs first; the TensorBoard eval/success tags when there are none)."""
    run_dir = Path(run_dir)
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise UserError(
            f"cannot read {run_dir / 'config.yaml'} ({type(err).__name__}); is it a run directory?"
        ) from None
    if not isinstance(config, dict):
        raise UserError(f"{run_dir / 'config.yaml'} is not a mapping; is it a run directory?")
    flat = flatten(config)
    evals, protocol, order, returns = read_evals(run_dir)
    scalars = read_scalars(run_dir / "tb", [WEIGHT_TAG] + ([] if evals else [EVAL_TAG]))
    source = "eval json"
    if not evals:
        source = "tensorboard"
        for tag, values in scalars.items():
            match = EVAL_TAG.match(tag)
            if match and match.group("task") != "mean":
                for step, value in values:
                    evals.setdefault(step, {})[match.group("task")] = value
    weights: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for tag, values in scalars.items():
        match = WEIGHT_TAG.match(tag)
        if match and match.group("task") != "mean":
            weights.setdefault(match.group("net"), {})[match.group("task")] = values
    tasks = _task_order(run_dir, config, order, evals)
    if protocol is None:
        protocol = (config.get("env") or {}).get("protocol")
    total = config.get("total_steps")
    finished = is_finished(run_dir, total if isinstance(total, int) else None)
    return Run(run_dir, flat, tasks, evals, protocol, finished, weights, source, returns)


def _task_order(run_dir: Path, config: dict, order: list[str], evals: dict[int, dict[str, float]]) -> list[str]:
    env_file = run_dir / "env.json"
    if env_file.is_file():
        try:
            tasks = json.loads(env_file.read_text()).get("tasks")
            if isinstance(tasks, list) and tasks:
                return [str(t) for t in tasks]
        except ValueError:
            pass
    if order:
        return order
    seen: list[str] = []
    for step in sorted(evals):
        seen += [t for t in evals[step] if t not in seen]
    return seen


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Every run under `paths` that has at least one evaluation (others are reported and left out)."""
    runs = []
    for run_dir in find_run_dirs(paths):
        run = load_run(run_dir)
        if not run.evals:
            warnings.warn(
                f"{run_dir} has no evaluation yet (no eval/step_<N>.json, no eval/success tags); left out", stacklevel=2
            )
            continue
        runs.append(run)
    if not runs:
        raise UserError(
            "none of the run directories has an evaluation yet (eval/step_<N>.json); train longer or lower eval_every"
        )
    return runs
