"""Shared fixtures: composed Hydra configs and small real Meta-World specs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import mtrl.config  # noqa: F401  (registers the run-directory resolver)

os.environ.setdefault("MUJOCO_GL", "egl")
# Tests use tiny networks: one thread is fastest and immune to OpenMP stalls when the machine is busy.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / "configs")


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose configs/<name>.yaml with Hydra overrides, as the entry points do."""
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def smoke_config(run_dir: Path, *overrides: str) -> DictConfig:
    """The composed (Hydra) smoke config, as the command line would see it."""
    return compose_config("train", ["experiment=smoke", f"run_dir={run_dir}", "progress=false", *overrides])


def smoke_run_config(run_dir: Path, *overrides: str):
    """The typed TrainConfig of the smoke experiment (what trainers take)."""
    from mtrl.config.parse import parse_train

    return parse_train(smoke_config(run_dir, *overrides))


def run_cli(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run train.py / evaluate.py as a user would, from the repository root."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str, status: int = 2) -> None:
    """The command failed with `status` and exactly one stderr line 'error: ...' holding every fragment."""
    assert proc.returncode == status, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="session")
def two_task_spec():
    """The smoke tasks under the mtrl protocol (goal seed 0)."""
    from envs import build_env_spec

    return build_env_spec({"tasks": ["reach-v3", "drawer-close-v3"], "protocol": "mtrl"}, seed=0)


def collect_smoke_data(path: Path, *extra: str) -> Path:
    """Scripted-expert data (noise 0.1) of the smoke tasks reach-v3 and drawer-close-v3: 2 episodes of 20
    steps each under the mtrl protocol, with `extra` collect.py overrides (e.g. a poor task)."""
    from mtrl.config.parse import parse_collect
    from mtrl.data.collect import collect

    cfg = compose_config(
        "collect",
        [
            "env.tasks=[reach-v3,drawer-close-v3]",
            "env.protocol=mtrl",
            "env.horizon=20",
            "episodes_per_task=2",
            "noise=0.1",
            "progress=false",
            *extra,
            f"output={path}",
        ],
    )
    return collect(parse_collect(cfg))
