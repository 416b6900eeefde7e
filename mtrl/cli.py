"""What the train.py / evaluate.py entry points call: Hydra parsing with one-line errors, then the library."""

from __future__ import annotations

import sys
from functools import wraps
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import mtrl.config  # noqa: F401  (registers the run-directory resolver)
import mtrl.sweep  # noqa: F401  (registers the sweep job-directory resolver)
from mtrl.errors import UserError

_NOISE = ("full_key", "object_type", "Config search path", "provider=", "Set the environment", "To append")


def condense_hydra_error(err: Exception) -> str:
    """Hydra's multi-line composition error as one line that keeps the bad value and the allowed ones."""
    text = str(err) if err.__cause__ is None else f"{err}\n{err.__cause__}"
    lines = [line.strip() for line in text.splitlines()]
    return " ".join(line for line in lines if line and not line.startswith(_NOISE))


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def hydra_main(config_dir: Path, config_name: str, task: Callable[[DictConfig], None]) -> None:
    """Check that the CLI overrides compose (one-line error if not), then run `task` under Hydra."""
    overrides = sys.argv[1:]
    if not any(arg.startswith("-") for arg in overrides):  # Hydra's own flags (-m, --cfg, ...) go straight through
        try:
            with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
                compose(config_name=config_name, overrides=overrides)
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
