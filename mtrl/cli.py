"""What the train.py / evaluate.py / collect.py entry points call: Hydra parsing with one-line errors, the typed
config built once, then the library."""

from __future__ import annotations

import difflib
import itertools
import os
import sys
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any, Callable, NoReturn

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

import mtrl.config  # noqa: F401  (registers the run-directory resolver)
from mtrl.errors import UserError
from mtrl.io import mujoco_log
from mtrl.train.sweep import is_finished, job_name, prepare_job

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# Launcher configs whose Hydra plugin comes with an optional extra: the hint added when it is missing.
_LAUNCHER_EXTRAS = {"hydra/launcher/ray": "ray", "hydra/launcher/joblib": "sweep"}
MUJOCO_LOG = "mujoco.log"  # MuJoCo's warnings during a run, in its run directory (mtrl.io.mujoco_log)


def config_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of a composed config (for suggestions)."""
    keys = []
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, DictConfig):
            keys += config_keys(value, f"{dotted}.")
    return keys


def known_keys(config_name: str, overrides: list[str]) -> list[str]:
    """The keys of the config the overrides' group choices compose (balancer=nashmtl: nashmtl's options), for
    suggestions; the defaults' keys when those choices do not compose. Call inside an initialised Hydra."""
    choices = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0] and o[0] not in "+~"]
    try:
        return config_keys(compose(config_name=config_name, overrides=choices))
    except Exception:  # a bad group choice: Hydra raises several types
        return config_keys(compose(config_name=config_name))


def nearest_key(key: str, known: list[str]) -> str | None:
    """The known key a misspelt one most likely meant, among the keys of its own group: one it begins
    (episodes -> episodes_per_task), else the closest spelling."""
    group, _, leaf = key.rpartition(".")
    leaves = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == group]
    starts = sorted((name for name in leaves if name.startswith(leaf)), key=len)
    close = starts[:1] or difflib.get_close_matches(leaf, leaves, n=1, cutoff=0.6)
    return f"{group}.{close[0]}" if close and group else (close[0] if close else None)


def key_hint(key: str, known: list[str]) -> str:
    """' (did you mean <key>?)', else ' (<group> has the options: ...)', else ''."""
    near = nearest_key(key, known)
    if near:
        return f" (did you mean {near}?)"
    group = key.rpartition(".")[0]
    options = sorted(k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == group and group)
    return f" ({group} has the options: {', '.join(options)})" if options else ""


def condense_hydra_error(err: Exception, known_keys: list[str] | None = None) -> str:
    """A Hydra composition error as one line, built from the exception's fields (the missing config and its
    group's options, the unknown key), with a suggestion; other errors give their first line."""
    cause = err.__cause__
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, name = err.missing_cfg_file.rpartition("/")
        if not err.options:  # a config that exists but could not be loaded: a launcher's plugin is missing
            extra = _LAUNCHER_EXTRAS.get(err.missing_cfg_file)
            hint = f'; its launcher plugin is not installed: pip install -e ".[{extra}]"' if extra else ""
            return f"config '{err.missing_cfg_file}' could not be loaded{hint}"
        close = difflib.get_close_matches(name, err.options, n=1)
        hint = f" (did you mean {group}={close[0]}?)" if close else ""
        return f"unknown {group}={name}{hint}; choose one of: {', '.join(err.options)}"
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and getattr(cause, "full_key", None):
        key = str(cause.full_key)
        return f"unknown option {key}{key_hint(key, known_keys or [])}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def exit_status(err: UserError) -> int:
    """2 for a refused input; a run that failed part-way (divergence) says its own status."""
    return getattr(err, "exit_status", 2)


def fail(message: str, status: int = 2) -> NoReturn:
    """End the command with `error: <message>` on stderr and `status`."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def job_error(job: str, message: str) -> None:
    """A sweep job's one-line error (the sweep goes on; `hydra_main` gives it its exit status)."""
    print(f"error: job {job}: {message}", file=sys.stderr, flush=True)


def in_sweep_job() -> bool:
    """Whether this process runs a job of a Hydra multirun (a sweep)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Every job of a sweep as its override list, in the order Hydra's basic sweeper launches them (the
    cartesian product of the swept values, the first override varying slowest).

    Call inside an initialised Hydra (glob sweeps over config groups need its config loader).
    """
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    axes = []
    for override in parser.parse_overrides(overrides):
        key = override.get_key_element()
        if override.is_sweep_override():
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([f"{key}={override.get_value_element_as_str()}"])
    return [list(job) for job in itertools.product(*axes)]


def check_train_job(cfg: DictConfig) -> None:
    """What a training job refuses before it touches its directory: the typed config and the dry build of every
    component (mtrl/train/dry_build.py)."""
    from mtrl.config.parse import parse_train
    from mtrl.train.dry_build import dry_build

    dry_build(parse_train(cfg))


def _job_checks() -> dict[str, Callable[[DictConfig], Any]]:
    from mtrl.config.parse import parse_collect, parse_evaluate

    return {"train": check_train_job, "evaluate": parse_evaluate, "collect": parse_collect}


@dataclass
class SweepPlan:
    """The outcome of checking a sweep's jobs before any starts: job directory per valid job, error per invalid one."""

    valid: dict[str, Path] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)


def check_sweep(config_name: str, overrides: list[str]) -> SweepPlan:
    """Compose and build the typed config of every job of a sweep before any job starts.

    A job that does not compose (unknown group, key or launcher: Hydra could not launch the sweep) ends the
    command with one line per distinct error. A job whose values are refused is printed as one line
    `error: job <name>: <why>` and left to fail on its own when Hydra reaches it; when no job is valid the
    command ends here.
    """
    plan, broken, check = SweepPlan(), {}, _job_checks()[config_name]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        try:
            jobs = sweep_jobs(overrides)
        except Exception as err:  # the override parser raises several types
            fail(condense_hydra_error(err))
        for job in jobs:
            try:
                cfg = compose(config_name=config_name, overrides=job, return_hydra_config=True)
            except Exception as err:  # Hydra raises several types for bad overrides/groups/keys
                broken.setdefault(condense_hydra_error(err, known_keys(config_name, job)), None)
                continue
            name = OmegaConf.select(cfg, "hydra.sweep.subdir", throw_on_resolution_failure=False)
            name = str(name) if name and config_name == "train" else job_name(job)
            directory = Path(str(cfg.hydra.sweep.dir)) / name
            with open_dict(cfg):
                del cfg["hydra"]
            try:
                check(cfg)
            except UserError as err:
                plan.invalid[name] = str(err)
                job_error(name, str(err))
                continue
            plan.valid[name] = directory
    if broken:
        print("\n".join(f"error: {message}" for message in broken), file=sys.stderr)
        sys.exit(2)
    if not plan.valid:
        fail(f"none of the {len(plan.invalid)} jobs of this sweep is valid; nothing was started")
    try:
        check_creatable(next(iter(plan.valid.values())).parent, "hydra.sweep.dir")
    except UserError as err:
        fail(str(err))
    return plan


def report_sweep(config_name: str, plan: SweepPlan) -> None:
    """After a sweep: one line and exit status 2 when a job was invalid or (training) did not finish its run."""
    unfinished = [name for name, folder in plan.valid.items() if config_name == "train" and not is_finished(folder)]
    if plan.invalid or unfinished:
        total = len(plan.valid) + len(plan.invalid)
        parts = [f"{len(plan.invalid)} invalid (not run): {', '.join(plan.invalid)}"] if plan.invalid else []
        parts += [f"{len(unfinished)} did not finish: {', '.join(unfinished)}"] if unfinished else []
        fail(f"sweep: {total - len(plan.invalid) - len(unfinished)} of {total} jobs finished; {'; '.join(parts)}")


def hydra_main(config_name: str, task: Callable[[DictConfig], None]) -> None:
    """Check the CLI overrides (one-line errors), then run `task` under Hydra.

    A single run is composed first; a sweep (-m / --multirun) has every job composed and its typed config built
    first (`check_sweep`), runs its valid jobs and ends with status 2 if a job was invalid or did not finish.
    Other Hydra flags (--cfg, --help, ...) go straight through.
    """
    args = sys.argv[1:]
    flags = [arg for arg in args if arg.startswith("-")]
    overrides = [arg for arg in args if not arg.startswith("-")]
    checked = all(flag in ("-m", "--multirun") for flag in flags)
    plan = None
    if checked and flags:
        plan = check_sweep(config_name, overrides)
    elif checked:
        check_composition(config_name, overrides)
    hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")(task)()
    if plan is not None:
        report_sweep(config_name, plan)


def check_composition(config_name: str, overrides: list[str]) -> None:
    """Compose a single run's overrides and build its typed config (training: the dry build of every component)
    before Hydra creates anything; a failure ends the command with one line (and a key suggestion).

    For training, the run directory Hydra is about to create is checked too (`check_creatable`).
    """
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        try:
            cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        except Exception as err:  # Hydra raises several types for bad overrides/groups/keys
            fail(condense_hydra_error(err, known_keys(config_name, overrides)))
    run_dir = str(cfg.hydra.run.dir)
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        _job_checks()[config_name](cfg)
        if config_name == "train":
            check_creatable(run_dir, "run_dir")
    except UserError as err:
        fail(str(err), exit_status(err))


def check_creatable(path: str | Path, key: str) -> None:
    """Refuse a directory that Hydra could not create (a file in the way, an unwritable folder) with one line
    instead of Hydra's traceback; nothing is created (a refused run leaves no directory)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{key}='{path}' is a file, not a directory; choose another {key}")
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if not existing.is_dir():
        raise UserError(f"{key}='{path}' cannot be created: '{existing}' is a file; choose another {key}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{key}='{path}' cannot be created: '{existing}' is not writable; choose another {key}")


def reports_user_errors(func: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn a UserError into 'error: <message>' on stderr and exit status 2.

    In a sweep job the line names the job and the job just ends, so the sweep's other jobs run on
    (`hydra_main` gives the sweep its exit status).
    """

    @wraps(func)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return func(cfg)
        except UserError as err:
            if not in_sweep_job():
                fail(str(err), exit_status(err))
            job_error(Path(HydraConfig.get().runtime.output_dir).name, str(err))
            return None

    return wrapper


@reports_user_errors
def run_train(cfg: DictConfig) -> None:
    from mtrl.config.parse import parse_train, plain
    from mtrl.io.logger import LineMode, RunLogger

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        raw = prepare_job(plain(cfg), run_dir, multirun=in_sweep_job())
        if raw is None:  # a sweep job whose directory already holds the finished run
            return
        config = parse_train(raw)
        print(f"run directory: {run_dir.resolve()}", flush=True)
        if config.note:
            print(f"note: {config.note}", flush=True)
        if in_sweep_job():  # parallel jobs: progress lines naming the job instead of bars
            RunLogger.line_mode = LineMode(run_dir.name, config.log_every)
        if config.offline_mode:
            from mtrl.train.offline_trainer import train_offline as train
        else:
            from mtrl.train.trainer import train
        mujoco_log.route(run_dir / MUJOCO_LOG)
        result = train(config, run_dir)
    except UserError:
        if run_dir.is_dir() and not any(run_dir.iterdir()):  # Hydra made it for a run that never started
            run_dir.rmdir()
        raise
    if result is not None:
        print(result.table())
    print(next_commands(run_dir.resolve(), config.logger))


def next_commands(run_dir: Path, logger: str = "tensorboard") -> str:
    """What to run after a training run, with its directory filled in (the curves where `logger` put them)."""
    curves = (
        f"  tensorboard --logdir {run_dir}/tb    # the logged curves"
        if logger != "wandb"
        else f"  wandb sync {run_dir}/wandb/latest-run    # the logged curves (offline runs; online ones are there)"
    )
    return "\n".join(
        [
            f"run directory: {run_dir}",
            "next:",
            f"  python evaluate.py checkpoint={run_dir}    # evaluate its latest checkpoint",
            f"  python -m mtrl.report {run_dir}    # tables and curves in {run_dir}/report",
            curves,
        ]
    )


@reports_user_errors
def run_evaluate(cfg: DictConfig) -> None:
    from mtrl.config.parse import parse_evaluate
    from mtrl.eval.evaluate_run import evaluate_from_config

    evaluate_from_config(parse_evaluate(cfg))


@reports_user_errors
def run_collect(cfg: DictConfig) -> None:
    from mtrl.config.parse import parse_collect
    from mtrl.data.collect import collect
    from mtrl.data.summary import summarize
    from mtrl.io.files import check_writable

    config = parse_collect(cfg)
    output = check_writable(config.output, "output")
    mujoco_log.route(mujoco_log.beside(output))
    try:
        path = collect(config)
    except KeyboardInterrupt:
        fail("interrupted; no dataset was written", status=130)
    print(summarize(path))
    print(f"wrote {path}")


__all__ = [
    "hydra_main",
    "run_train",
    "run_evaluate",
    "run_collect",
    "condense_hydra_error",
    "sweep_jobs",
    "check_sweep",
    "check_train_job",
]
