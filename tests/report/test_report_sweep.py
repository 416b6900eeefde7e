"""Sweeps: deterministic job directories, skip/resume decisions, and a real 2-run multirun that aggregates."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mtrl.config.parse import plain
from mtrl.errors import UserError
from mtrl.report import write_report
from mtrl.train.sweep import is_finished, job_name, prepare_job, run_status
from tests.conftest import CONFIGS, ROOT, smoke_config


def test_job_names_are_sorted_overrides_without_excluded_keys():
    assert job_name(["seed=2", "balancer=pcgrad", "experiment=mt10"]) == "balancer=pcgrad,experiment=mt10,seed=2"
    assert job_name(["seed=2", "progress=false", "sweep.name=x"], ["progress"]) == "seed=2"
    assert (
        job_name(["+actor.encoder_options.k=3", "env.tasks=[reach-v3,push-v3]"])
        == "+actor.encoder_options.k=3,env.tasks=_reach-v3,push-v3_"
    )
    assert job_name([]) == "defaults"
    long = job_name([f"env.tasks=[{','.join(['reach-v3'] * 60)}]"])
    assert len(long.encode()) <= 200 and long != job_name([f"env.tasks=[{','.join(['push-v3'] * 60)}]"])


def test_sweep_directory_config_resolves_to_the_job_overrides():
    overrides = ["seed=3", "experiment=smoke", "progress=false", "balancer=pcgrad", "sweep.name=mt"]
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.sweep.dir == "multirun/mt"
    assert cfg.hydra.sweep.subdir == "balancer=pcgrad,experiment=smoke,seed=3"
    assert set(cfg.sweep) == {"name", "skip_finished", "resume_unfinished", "exclude_keys"}


def _fake_run(run_dir, ckpt_step, eval_step):
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "eval").mkdir()
    (run_dir / "checkpoints" / f"step_{ckpt_step:012d}.pt").write_bytes(b"")
    if eval_step is not None:
        (run_dir / "eval" / f"step_{eval_step:012d}.json").write_text("{}")
    (run_dir / "env.json").write_text('{"tasks": ["reach-v3", "drawer-close-v3"]}')


def test_finished_runs_are_skipped_and_unfinished_ones_resume(tmp_path):
    cfg = plain(smoke_config(tmp_path / "unused", "total_steps=300"))
    finished, partial, fresh = tmp_path / "finished", tmp_path / "partial", tmp_path / "fresh"
    _fake_run(finished, 300, 300)
    _fake_run(partial, 200, 200)
    fresh.mkdir()
    assert run_status(finished).finished(300) and not run_status(partial).finished(300)
    assert prepare_job(cfg, finished, multirun=True) is None
    assert prepare_job(cfg, finished, multirun=False) is cfg  # single runs are never skipped
    resumed = prepare_job(cfg, partial, multirun=True)
    assert resumed["resume"] == str(partial) and cfg["resume"] is None
    assert prepare_job(cfg, fresh, multirun=True)["resume"] is None
    no_eval = tmp_path / "no_eval"
    _fake_run(no_eval, 300, None)  # checkpoint but its evaluation never written: not finished
    assert prepare_job(cfg, no_eval, multirun=True)["resume"] == str(no_eval)
    cfg["sweep"]["skip_finished"] = False
    assert prepare_job(cfg, finished, multirun=True)["resume"] == str(finished)


def test_resuming_a_directory_of_other_tasks_is_refused(tmp_path):
    run_dir = tmp_path / "job"
    _fake_run(run_dir, 100, 100)
    (run_dir / "env.json").write_text('{"tasks": ["push-v3"]}')
    with pytest.raises(UserError, match="holds a run on tasks"):
        prepare_job(plain(smoke_config(tmp_path / "x", "total_steps=300")), run_dir, multirun=True)


def test_two_run_local_multirun_finishes_is_resumable_and_aggregates(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "experiment=smoke",
        "total_steps=300",
        "seed=1,2",
        "progress=false",
        "hydra/launcher=local",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert jobs == ["experiment=smoke,seed=1,total_steps=300", "experiment=smoke,seed=2,total_steps=300"]
    for job in jobs:
        assert is_finished(sweep_dir / job)
        assert OmegaConf.load(sweep_dir / job / "config.yaml").seed == int(job.split("seed=")[1][0])
    report = write_report([sweep_dir], tmp_path / "report", reps=200)
    (group,) = report.groups
    assert group.label == "balancer=uniform,encoder=onehot" and group.seeds == [1, 2] and group.final_step == 300
    assert (tmp_path / "report" / "learning_curves.png").stat().st_size > 0
    # The same sweep again: every job maps to its finished directory and is skipped in-process.
    for job in jobs:
        cfg = plain(smoke_config(tmp_path / "unused", "total_steps=300", f"seed={job.split('seed=')[1][0]}"))
        assert prepare_job(cfg, sweep_dir / job, multirun=True) is None
