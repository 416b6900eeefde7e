"""Sweeps check every job before any starts, run the valid ones, and end non-zero when a job was invalid or
did not finish; parallel jobs print progress lines naming the job instead of bars (issue #13)."""

from __future__ import annotations

import pytest
from hydra import initialize_config_dir

from mtrl.cli import sweep_jobs
from mtrl.train.sweep import is_finished
from tests.conftest import CONFIGS, assert_one_line_error, run_cli


def test_sweep_jobs_are_hydras_product_of_every_swept_value():
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        jobs = sweep_jobs(["seed=1,2", "balancer=uniform,pcgrad", "env=mt10", "total_steps=range(100,300,100)"])
        globbed = sweep_jobs(["balancer=glob(pc*)"])  # glob over a config group: needs Hydra's config loader
    assert len(jobs) == 8 and all(len(job) == 4 and job[2] == "env=mt10" for job in jobs)
    assert {tuple(job) for job in jobs} == {
        (f"seed={s}", f"balancer={b}", "env=mt10", f"total_steps={t}")
        for s in (1, 2)
        for b in ("uniform", "pcgrad")
        for t in (100, 200)
    }
    assert globbed == [["balancer=pcgrad"]]


def test_a_sweep_whose_jobs_are_all_invalid_starts_nothing(tmp_path):
    proc = run_cli("train.py", "-m", "experiment=smoke", "total_steps=-5,-6", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("error: job experiment=smoke,total_steps=-5: total_steps=-5")
    assert lines[2] == "error: none of the 2 jobs of this sweep is valid; nothing was started"
    assert not (tmp_path / "sweep").exists()


def test_a_typo_hydra_cannot_compose_stops_the_whole_sweep_with_one_line(tmp_path):
    proc = run_cli(
        "train.py", "-m", "experiment=smoke", "seed=1,2", "total_step=5", f"hydra.sweep.dir={tmp_path / 'sweep'}"
    )
    assert_one_line_error(proc, "total_step", "did you mean total_steps?")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_invalid_and_diverging_jobs_do_not_stop_the_valid_ones(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "train.py",
        "-m",
        "experiment=smoke",
        "total_steps=300,-5",
        "agent.critic_lr=3e-4,1e6",
        "eval_every=0",
        "log_every=100",
        "hydra/launcher=local",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        timeout=900,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    ok, diverged = "agent.critic_lr=0.0003", "agent.critic_lr=1000000.0"
    suffix = ",eval_every=0,experiment=smoke,log_every=100,total_steps="
    errors = proc.stderr.strip().splitlines()
    # each invalid job: its line before any job starts and again when Hydra reaches it
    assert errors.count(f"error: job {ok}{suffix}-5: total_steps=-5 is not allowed; expected an integer >= 1") == 2
    assert any(line.startswith(f"error: job {diverged}{suffix}300: training diverged") for line in errors)
    assert errors[-1].startswith("error: sweep: 1 of 4 jobs finished; 2 invalid (not run): ")
    assert f"1 did not finish: {diverged}{suffix}300" in errors[-1]
    assert sorted(p.name for p in sweep.iterdir()) == [f"{ok}{suffix}300", f"{diverged}{suffix}300", "multirun.yaml"]
    assert is_finished(sweep / f"{ok}{suffix}300")
    # progress: lines naming the job, no progress bar redraws
    assert f"[{ok}{suffix}300] step 100/300 (33%)" in proc.stdout and "\r" not in proc.stdout + proc.stderr
