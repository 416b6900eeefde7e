"""Runs fail loudly and never report a false result: divergence, runs that cannot learn, diverged policies,
resumes that change the run, misspelt keys, MuJoCo's warnings, thread defaults (issue #13)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch

from mtrl.errors import UserError
from mtrl.io import checkpoint, mujoco_log
from mtrl.io.logger import LineMode, RunLogger
from mtrl.runtime import available_cores, cgroup_cpu_limit, default_threads
from mtrl.train.guard import check_actions
from mtrl.train.trainer import Trainer
from tests.conftest import ROOT, assert_one_line_error, collect_smoke_data, run_cli, smoke_run_config

LR_1E6 = ["agent.actor_lr=1e6", "agent.critic_lr=1e6"]  # 1e3 grows the losses to ~1e25 but they stay finite


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 300-step smoke run (checkpoint at step 300); copy it before changing it."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    Trainer(smoke_run_config(run_dir, "total_steps=300", "eval_every=0"), run_dir).run()
    return run_dir


def _copy(run_dir, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target


def _all_finite(file) -> bool:
    _, state = checkpoint.load(file)
    tensors = [
        t
        for net in state["agent"].values()
        if isinstance(net, dict)
        for t in net.values()
        if torch.is_tensor(t) and t.is_floating_point()
    ]
    return all(torch.isfinite(t).all() for t in tensors)


# ----------------------------------------------------------------------------------------- divergence
@pytest.mark.slow
@pytest.mark.parametrize(
    "log_every,fragment",
    [
        (
            100,
            "became non-finite or passed 1e+08 at update",
        ),  # the guard reads the losses at the log step 300, before checkpointing
        (1000, "training diverged"),  # no log step before the checkpoint at 300: the weight check refuses it
    ],
)
def test_a_diverging_online_run_stops_with_one_line_and_keeps_its_newest_finite_checkpoint(
    tmp_path, log_every, fragment
):
    run_dir = tmp_path / "run"  # learning starts at step 200 (warm-up); 1e6 makes update 1 non-finite
    proc = run_cli(
        "train.py",
        "experiment=smoke",
        f"run_dir={run_dir}",
        "progress=false",
        "eval_every=0",
        "checkpoint_every=100",
        "keep_checkpoints=1",
        f"log_every={log_every}",
        *LR_1E6,
    )
    assert_one_line_error(proc, "training diverged", fragment, status=1)
    kept = checkpoint.list_checkpoints(run_dir)
    assert kept and all(_all_finite(file) for file in kept)
    assert kept[-1].name in ("step_000000000200.pt", "step_000000000300.pt")
    assert not (run_dir / "checkpoints" / checkpoint.BEST).exists()  # never evaluated, never "best"


@pytest.mark.slow
def test_a_diverging_offline_run_stops_with_one_line(tmp_path, tiny_dataset):
    run_dir = tmp_path / "run"
    proc = run_cli(
        "train.py",
        "experiment=smoke",
        f"run_dir={run_dir}",
        "progress=false",
        "mode=offline",
        f"dataset={tiny_dataset}",
        "env.horizon=20",
        "log_every=5",
        "total_steps=40",
        "checkpoint_every=10",
        "eval_every=0",
        *LR_1E6,
    )
    assert_one_line_error(proc, "training diverged", "became non-finite or passed 1e+08 at update", status=1)
    assert all(_all_finite(file) for file in checkpoint.list_checkpoints(run_dir))


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Scripted data of the smoke tasks, 20-step episodes."""
    return collect_smoke_data(tmp_path_factory.mktemp("data") / "tiny.h5")


# ----------------------------------------------------------------------------------------- runs that cannot learn
@pytest.mark.parametrize(
    "args,fragments",
    [
        (["replay_capacity=20"], ["replay_capacity=20 holds 10 transitions per task", "batch_size_per_task=16"]),
        (["warmup_steps=600", "total_steps=600"], ["warmup_steps=600 with total_steps=600"]),
    ],
)
def test_runs_that_would_never_update_are_refused(tmp_path, args, fragments):
    run_dir = tmp_path / "run"
    assert_one_line_error(run_cli("train.py", "experiment=smoke", f"run_dir={run_dir}", *args), *fragments)
    assert not run_dir.exists()


# ----------------------------------------------------------------------------------------- resuming
def test_total_steps_below_the_resumed_step_is_refused(trained_run, tmp_path):
    run_dir = _copy(trained_run, tmp_path)
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    proc = run_cli("train.py", "experiment=smoke", f"resume={run_dir}", "total_steps=200", "warmup_steps=100")
    assert_one_line_error(proc, "total_steps=200 is below the checkpoint's step 300")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before


@pytest.mark.parametrize(
    "change,fragments",
    [
        ("balancer=pcgrad", ["balancer=uniform", "balancer=pcgrad"]),
        ("encoder=multihead", ["actor.encoder=onehot", "actor.encoder=multihead"]),
    ],
)
def test_changing_balancer_or_encoder_on_resume_names_them(trained_run, tmp_path, change, fragments):
    run_dir = _copy(trained_run, tmp_path)
    with pytest.raises(UserError) as err:
        Trainer(smoke_run_config(run_dir, f"resume={run_dir}", "total_steps=600", change), run_dir)
    assert all(fragment in str(err.value) for fragment in fragments) and "\n" not in str(err.value)


def test_a_resume_prints_its_checkpoint_and_the_changed_settings(trained_run, tmp_path):
    run_dir = _copy(trained_run, tmp_path)
    proc = run_cli(
        "train.py",
        "experiment=smoke",
        f"resume={run_dir}",
        "total_steps=400",
        "eval_every=0",
        "progress=false",
        "agent.actor_lr=1e-4",
    )
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stdout and "step_000000000300.pt at step 300" in proc.stdout
    assert "agent.actor_lr: 0.0003 -> 0.0001" in proc.stdout


# ----------------------------------------------------------------------------------------- misspelt keys
def test_misspelt_keys_get_a_suggestion(tmp_path):
    assert_one_line_error(
        run_cli("train.py", "experiment=smoke", f"run_dir={tmp_path / 'r'}", "agent.gama=0.9"),
        "agent.gama",
        "did you mean agent.gamma?",
    )


# ----------------------------------------------------------------------------------------- diverged policies
def test_check_actions_refuses_non_finite_rows():
    actions = np.zeros((3, 4), np.float32)
    assert check_actions(actions, "here") is actions
    actions[1, 2] = np.nan
    actions[2, 0] = np.inf
    with pytest.raises(UserError, match=r"^here: the policy produced non-finite actions \(NaN or inf\) in 2 of 3 envs"):
        check_actions(actions, "here")
    with pytest.raises(UserError, match="in 1 of 1 envs"):
        check_actions(np.array([0.0, np.nan]), "one action")


@pytest.fixture
def nan_policy_run(trained_run, tmp_path):
    """The trained run with finite but huge actor weights (+-1e30): its actions overflow to NaN."""
    run_dir = _copy(trained_run, tmp_path)
    (file,) = checkpoint.list_checkpoints(run_dir)
    state = torch.load(file, weights_only=False)
    generator = torch.Generator().manual_seed(0)
    for name, value in state["agent"]["actor"].items():
        if value.is_floating_point():
            signs = torch.randint(0, 2, value.shape, generator=generator).float() * 2 - 1
            state["agent"]["actor"][name] = signs * 1e30
    torch.save(state, file)
    return run_dir


def test_evaluating_a_policy_with_nan_actions_is_refused_not_scored(nan_policy_run, tmp_path):
    output = tmp_path / "eval.json"
    proc = run_cli(
        "evaluate.py", f"checkpoint={nan_policy_run}", "episodes_per_task=1", f"output={output}", "progress=false"
    )
    assert_one_line_error(proc, "evaluation of checkpoint", "non-finite actions")
    assert not output.exists() and not output.with_suffix(".csv").exists()


def test_collecting_with_a_nan_policy_is_refused_and_writes_nothing(nan_policy_run, tmp_path):
    output = tmp_path / "data" / "x.h5"
    proc = run_cli(
        "collect.py",
        f"checkpoint={nan_policy_run}",
        "env.tasks=[reach-v3]",
        "env.protocol=mtrl",
        "env.horizon=20",
        "episodes_per_task=1",
        f"output={output}",
        "progress=false",
    )
    assert_one_line_error(proc, "collection with checkpoint", "non-finite actions")
    assert list(output.parent.iterdir()) == []


def test_scripted_evaluation_of_a_task_list_works(tmp_path):
    output = tmp_path / "scripted.json"
    proc = run_cli(
        "evaluate.py",
        "policy=scripted",
        "env.tasks=[reach-v3]",
        "episodes_per_task=1",
        f"output={output}",
        "progress=false",
    )
    assert proc.returncode == 0, proc.stderr
    assert output.is_file() and "reach-v3" in proc.stdout


# ----------------------------------------------------------------------------------------- MuJoCo's log
def test_mujoco_warnings_go_to_the_routed_file_not_the_working_directory(tmp_path, monkeypatch, capsys):
    from envs import build_env_spec
    from envs.single import make_task_env

    spec = build_env_spec({"tasks": ["reach-v3"], "protocol": "mtrl"}, seed=0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(mujoco_log.ENV_VAR, raising=False)
    log = tmp_path / "run" / "mujoco.log"
    log.parent.mkdir()
    env = make_task_env("reach-v3", spec.goals["reach-v3"][:1], "fixed", 20, 0)
    try:
        handler = mujoco_log.route(log)
        assert os.environ[mujoco_log.ENV_VAR] == str(log.resolve())
        for _ in range(mujoco_log.MAX_WRITTEN):  # NaN control and NaN acceleration warnings after each reset
            env.reset(seed=0)
            env.step(np.full(env.action_space.shape, np.nan, np.float32))
    finally:
        mujoco.set_mju_user_warning(None)
        env.close()
    lines = log.read_text().splitlines()
    assert handler.count > mujoco_log.MAX_WRITTEN and len(lines) == mujoco_log.MAX_WRITTEN + 1
    assert "Nan, Inf or huge value in CTRL" in lines[0] and "not written" in lines[-1]
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    out = capsys.readouterr().out
    assert out.count("MuJoCo warned") == 1 and str(log.resolve()) in out


# ----------------------------------------------------------------------------------------- threads
def test_cgroup_cpu_quota_is_read_from_v2_and_v1_files(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 4.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_default_threads_follow_omp_num_threads_else_the_usable_cores(monkeypatch):
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_threads() == available_cores()


FAULTS_PROBE = """
import resource, sys, torch
from mtrl.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Linear(53, 400), torch.nn.ReLU(), torch.nn.Linear(400, 400), torch.nn.Linear(400, 1))
optim, x = torch.optim.Adam(net.parameters()), torch.randn(1280, 53)
for step in range(13):
    if step == 3:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    optim.zero_grad()
    net(x).square().mean().backward()
    optim.step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keeping_freed_memory_stops_the_page_faults_of_repeated_training_steps():
    faults = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", FAULTS_PROBE, mode], capture_output=True, text=True, check=True, cwd=ROOT
            ).stdout
        )
        for mode in ("default", "keep")
    }
    assert faults["default"] > 1000  # glibc returned the freed activations to the system: fresh pages every step
    assert faults["keep"] < faults["default"] / 5, faults


def test_entry_points_set_the_openmp_wait_policy_before_torch_unless_the_user_did():
    scripts = [str(ROOT / name) for name in ("train.py", "evaluate.py", "collect.py")]
    probe = (
        "import os, runpy, sys\n"
        "preset = os.environ.get('OMP_WAIT_POLICY')\n"
        "for script in sys.argv[1:]:\n"
        "    runpy.run_path(script, run_name='probe')\n"
        "    print(os.environ['OMP_WAIT_POLICY'])\n"
        "    os.environ.pop('OMP_WAIT_POLICY') if preset is None else None\n"
    )
    for preset, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        env.update({"OMP_WAIT_POLICY": preset} if preset else {})
        out = subprocess.run([sys.executable, "-c", probe, *scripts], cwd=ROOT, env=env, capture_output=True, text=True)
        assert out.stdout.split() == [expected] * 3, out.stderr
    for script in scripts:
        text = Path(script).read_text()
        assert text.index("OMP_WAIT_POLICY") < text.index("from mtrl")  # set before torch is imported


# ----------------------------------------------------------------------------------------- sweep progress lines
def test_line_mode_prints_one_line_per_log_period_naming_the_job(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(RunLogger, "line_mode", LineMode("seed=2", every=100))
    log = RunLogger(tmp_path, ["reach-v3"], total_steps=300, start_step=0, progress=True)
    for _ in range(30):
        log.advance(10)
        log.show(success="0.50")
    log.message("step 300: eval mean success 1.000")
    log.close()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines[:3]] == [
        "[seed=2] step 100/300",
        "[seed=2] step 200/300",
        "[seed=2] step 300/300",
    ]
    assert all("success 0.50" in line and "step/s" in line for line in lines[:3])
    assert lines[3] == "[seed=2] step 300: eval mean success 1.000" and len(lines) == 4
