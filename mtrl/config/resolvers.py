"""Hydra resolvers the configs use (registered on import of mtrl.config): the run and sweep-job directories."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import ListConfig, OmegaConf

_UNSET = (None, "None", "null", "")


def default_run_dir(run_dir: Any, resume: Any, tasks: Any, seed: Any) -> str:
    """Hydra's run dir: `run_dir`, else the resumed run (a checkpoint file's run), else runs/<time>_<tasks>_s<seed>."""
    if run_dir not in _UNSET:
        return str(run_dir)
    if resume not in _UNSET:
        path = Path(str(resume)).expanduser()
        return str(path.parent.parent if path.is_file() else path)
    label = tasks if isinstance(tasks, str) else f"{len(tasks)}tasks"
    return f"runs/{time.strftime('%Y-%m-%d_%H-%M-%S')}_{label}_s{seed}"


def job_dir(overrides: Any, exclude_keys: Any = None) -> str:
    """Hydra's sweep subdir: the job's own overrides, sorted by key (mtrl.train.sweep.job_name)."""
    from mtrl.train.sweep import job_name

    plain = OmegaConf.to_container(overrides) if isinstance(overrides, ListConfig) else overrides
    exclude = OmegaConf.to_container(exclude_keys) if isinstance(exclude_keys, ListConfig) else exclude_keys
    if isinstance(plain, str):
        plain = [plain] if plain else []
    if isinstance(exclude, str):
        exclude = [exclude]
    return job_name(plain or [], exclude or [])


if not OmegaConf.has_resolver("mtrl_run_dir"):
    OmegaConf.register_new_resolver("mtrl_run_dir", default_run_dir)
if not OmegaConf.has_resolver("mtrl_job_dir"):
    OmegaConf.register_new_resolver("mtrl_job_dir", job_dir)
