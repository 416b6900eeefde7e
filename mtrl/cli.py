"""What the train.py / evaluate.py entry points call: Hydra parsing with one-line errors, then the library."""

from __future__ import annotations

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

_NOISE = ("full_key", "object_type", "Config search path", "provider=", "Set the environment", "To append")


# Launcher configs whose Hydra plugin comes with an optional extra: the hint added when it is missing.
_LAUNCHER_EXTRAS = {"hydra/launcher/ray": "ray", "hydra/launcher/joblib": "sweep"}


def condense_hydra_error(err: Exception) -> str:
    """Hydra's multi-line composition error as one line that keeps the bad value and the allowed ones."""
    text = str(err) if err.__cause__ is None else f"{err}\n{err.__cause__}"
    lines = [line.strip() for line in text.splitlines()]
    message = " ".join(line for line in lines if line and not line.startswith(_NOISE))
    for config, extra in _LAUNCHER_EXTRAS.items():
        if f"Could not load '{config}'" in message:
            message += f' (its launcher plugin is not installed: pip install -e ".[{extra}]")'
    return message


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


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


def hydra_main(config_dir: Path, config_name: str, task: Callable[[DictConfig], None]) -> None:
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
            with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
                for job in jobs:
                    compose(config_name=config_name, overrides=job)
        except Exception as err:  # Hydra raises several types for bad overrides/groups/keys
            fail(condense_hydra_error(err))
    hydra.main(config_path=str(Path(config_dir).resolve()), config_name=config_name, version_base="1.3")(task)()


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

    from mtrl.sweep import prepare_job

    if cfg.get("mode") == "offline":
        from mtrl.offline_trainer import train_offline as train
    else:
        from mtrl.trainer import train

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        cfg = prepare_job(cfg, run_dir, multirun=HydraConfig.get().mode == RunMode.MULTIRUN)
        if cfg is None:  # a sweep job whose directory already holds the finished run
            return
        result = train(cfg, run_dir)
    except UserError:
        if run_dir.is_dir() and not any(run_dir.iterdir()):  # Hydra made it for a run that never started
            run_dir.rmdir()
        raise
    if result is not None:
        print(result.table())
    print(f"run directory: {run_dir}")


@reports_user_errors
def run_evaluate(cfg: DictConfig) -> None:
    from mtrl.evaluate_run import evaluate_from_config

    evaluate_from_config(cfg)
