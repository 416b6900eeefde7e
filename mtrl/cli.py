"""What the train.py / evaluate.py / collect.py entry points call: Hydra parsing with one-line errors, the typed
config built once, then the library."""

from __future__ import annotations

import difflib
import re
import sys
from functools import wraps
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from omegaconf import DictConfig

import mtrl.config  # noqa: F401  (registers the run-directory resolver)
import mtrl.sweep  # noqa: F401  (registers the sweep job-directory resolver)
from mtrl.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
_NOISE = ("full_key", "object_type", "Config search path", "provider=", "Set the environment", "To append")
_MISSING_KEY = re.compile(r"Key '([^']+)' is not in struct")
_OVERRIDE = re.compile(r"Could not override '([^']+)'")

# Launcher configs whose Hydra plugin comes with an optional extra: the hint added when it is missing.
_LAUNCHER_EXTRAS = {"hydra/launcher/ray": "ray", "hydra/launcher/joblib": "sweep"}


def config_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of a composed config (for suggestions)."""
    keys = []
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, DictConfig):
            keys += config_keys(value, f"{dotted}.")
    return keys


def suggest_key(message: str, known: list[str]) -> str:
    """A 'did you mean' hint for a misspelt key named in a Hydra error, or ''."""
    found = _OVERRIDE.search(message) or _MISSING_KEY.search(message)
    if not found:
        return ""
    close = difflib.get_close_matches(found.group(1), known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def condense_hydra_error(err: Exception, known_keys: list[str] | None = None) -> str:
    """Hydra's multi-line composition error as one line that keeps the bad value and the allowed ones."""
    text = str(err) if err.__cause__ is None else f"{err}\n{err.__cause__}"
    lines = [line.strip() for line in text.splitlines()]
    message = " ".join(line for line in lines if line and not line.startswith(_NOISE))
    for config, extra in _LAUNCHER_EXTRAS.items():
        if f"Could not load '{config}'" in message:
            message += f' (its launcher plugin is not installed: pip install -e ".[{extra}]")'
    return message + suggest_key(message, known_keys or [])


def fail(message: str, status: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def sweep_jobs_to_check(overrides: list[str]) -> list[list[str]]:
    """Override lists of sweep jobs that between them use every value of every enumerable sweep once.

    The first list takes each sweep's first value; each further one changes a single sweep to another
    value. Sweeps that cannot be enumerated without the config (glob, interval) are left out.
    """
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for override in parsed:
        if not override.is_sweep_override():
            choices.append([override.input_line])
        elif override.is_discrete_sweep() and override.value_type != ValueType.GLOB_CHOICE_SWEEP:
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
    first = [values[0] for values in choices]
    jobs = [first]
    for i, values in enumerate(choices):
        jobs += [first[:i] + [value] + first[i + 1 :] for value in values[1:]]
    return jobs


def check_composition(config_name: str, jobs: list[list[str]]) -> None:
    """Compose every job's overrides; the first failure ends the command with one line (and a key suggestion)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for job in jobs:
            try:
                compose(config_name=config_name, overrides=job)
            except Exception as err:  # Hydra raises several types for bad overrides/groups/keys
                fail(condense_hydra_error(err, config_keys(compose(config_name=config_name))))


def hydra_main(config_name: str, task: Callable[[DictConfig], None]) -> None:
    """Check that the CLI overrides compose (one-line error if not), then run `task` under Hydra.

    A sweep (-m / --multirun) is checked job by job over every swept value; other Hydra flags
    (--cfg, --help, ...) go straight through.
    """
    args = sys.argv[1:]
    flags = [arg for arg in args if arg.startswith("-")]
    overrides = [arg for arg in args if not arg.startswith("-")]
    if all(flag in ("-m", "--multirun") for flag in flags):
        try:
            jobs = sweep_jobs_to_check(overrides) if flags else [overrides]
        except Exception as err:
            fail(condense_hydra_error(err))
        check_composition(config_name, jobs)
    hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")(task)()


def reports_user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a UserError into 'error: <message>' on stderr and exit status 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as err:
            fail(str(err))

    return wrapper


@reports_user_errors
def run_train(cfg: DictConfig) -> None:
    from hydra.types import RunMode

    from mtrl.config import parse_train
    from mtrl.sweep import prepare_job

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        cfg = prepare_job(cfg, run_dir, multirun=HydraConfig.get().mode == RunMode.MULTIRUN)
        if cfg is None:  # a sweep job whose directory already holds the finished run
            return
        config = parse_train(cfg)
        if config.offline_mode:
            from mtrl.offline_trainer import train_offline as train
        else:
            from mtrl.trainer import train
        result = train(config, run_dir)
    except UserError:
        if run_dir.is_dir() and not any(run_dir.iterdir()):  # Hydra made it for a run that never started
            run_dir.rmdir()
        raise
    if result is not None:
        print(result.table())
    print(f"run directory: {run_dir}")


@reports_user_errors
def run_evaluate(cfg: DictConfig) -> None:
    from mtrl.config import parse_evaluate
    from mtrl.evaluate_run import evaluate_from_config

    evaluate_from_config(parse_evaluate(cfg))


@reports_user_errors
def run_collect(cfg: DictConfig) -> None:
    from mtrl.config import parse_collect
    from mtrl.data.collect import collect
    from mtrl.data.summary import summarize
    from mtrl.files import check_writable

    config = parse_collect(cfg)
    check_writable(config.output, "output")
    try:
        path = collect(config)
    except KeyboardInterrupt:
        fail("interrupted; no dataset was written", status=130)
    print(summarize(path))
    print(f"wrote {path}")


__all__ = ["hydra_main", "run_train", "run_evaluate", "run_collect", "condense_hydra_error", "sweep_jobs_to_check"]
