"""Nothing is touched before every component is built, and no run exits 0 with a wrong result (issue #22):
the dry build, the run-directory lock, runs that could never update, divergence, positive-loss balancers,
the entry points' contradictions and hints, and what a newcomer is shown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mtrl.agents.factory import build_balancers, construct_agent
from mtrl.config import BalancerConfig
from mtrl.errors import RunFailed, UserError
from mtrl.io import checkpoint
from mtrl.io.run_lock import LOCK_FILE, RunLock
from mtrl.train.dry_build import dry_build
from mtrl.train.guard import ABS_LIMIT, DivergenceGuard, check_finite_state
from mtrl.train.trainer import Trainer
from tests.conftest import ROOT, assert_one_line_error, compose_config, run_cli, smoke_run_config

SMOKE = ["experiment=smoke", "progress=false"]


def fake_run(run_dir: Path) -> dict[str, bytes]:
    """A directory holding a run's files (what overwrite=true would delete); returns their contents."""
    (run_dir / "checkpoints").mkdir(parents=True)
    files = {"config.yaml": b"seed: 1\n", "checkpoints/step_000000000300.pt": b"weights", "env.json": b"{}"}
    for name, data in files.items():
        (run_dir / name).write_bytes(data)
    return files


# ----------------------------------------------------------------------------------------- 1. overwrite
@pytest.mark.parametrize(
    "bad,fragment",
    [
        (["balancer=cagrad", "balancer.c=-1"], "balancer.c=-1"),
        (["encoder=moore", "encoder.num_experts=0"], "encoder.num_experts"),
        (["balancer=famo", "balancer.apply_to=[critic,actor]"], "needs positive task losses"),
        (["curriculum=learning_progress", "curriculum.theta=2"], "theta"),
    ],
)
def test_overwrite_with_a_bad_component_value_leaves_the_existing_run_untouched(tmp_path, bad, fragment):
    run_dir = tmp_path / "run"
    files = fake_run(run_dir)
    proc = run_cli("train.py", *SMOKE, f"run_dir={run_dir}", "overwrite=true", *bad)
    assert_one_line_error(proc, fragment)
    assert {name: (run_dir / name).read_bytes() for name in files} == files


def test_the_dry_build_constructs_networks_balancers_and_curriculum_without_writing(tmp_path):
    run_dir = tmp_path / "never"
    spec = dry_build(smoke_run_config(run_dir, "encoder=moore", "balancer=pcgrad", "curriculum=learning_progress"))
    assert spec.task_names == ["reach-v3", "drawer-close-v3"]
    assert not run_dir.exists()
    with pytest.raises(UserError, match=r"critic\.encoder_options\.position .* \(encoder=film\)"):
        dry_build(smoke_run_config(run_dir, "critic.encoder=film", "+critic.encoder_options.position=middle"))


def test_a_trainer_claims_its_directory_only_after_building_everything(tmp_path):
    run_dir = tmp_path / "run"
    files = fake_run(run_dir)
    trainer = Trainer(smoke_run_config(run_dir, "overwrite=true"), run_dir)  # built, not yet run: nothing touched
    try:
        assert {name: (run_dir / name).read_bytes() for name in files} == files
    finally:
        trainer.close()


# ----------------------------------------------------------------------------------------- 2. the lock
def _hold_lock(run_dir: Path) -> subprocess.Popen:
    code = (
        f"from mtrl.io.run_lock import RunLock; RunLock({str(run_dir)!r}).acquire(); print('held', flush=True); input()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_refuses_a_second_run_naming_its_owner_and_a_killed_owner_frees_it(tmp_path):
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(UserError, match=rf"in use by another run \(pid {holder.pid} on "):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid  # left behind by the killed run
    lock = RunLock(tmp_path)
    lock.acquire()  # taken over
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_second_train_py_into_a_running_run_dir_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *SMOKE, f"run_dir={run_dir}", "total_steps=1000000"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not (run_dir / "config.yaml").exists() and time.time() < deadline:
            time.sleep(0.2)
        proc = run_cli("train.py", *SMOKE, f"run_dir={run_dir}", "overwrite=true")
        assert_one_line_error(proc, "is in use by another run", f"pid {first.pid}")
        assert (run_dir / "config.yaml").exists()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


# ----------------------------------------------------------------------------------------- 3. networks
def test_encoder_values_in_a_sweep_are_one_line_per_job_before_any_job_starts(tmp_path):
    proc = run_cli(
        "train.py", "-m", *SMOKE, f"hydra.sweep.dir={tmp_path}", "encoder=film", "encoder.position=middle,sideways"
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert sum("encoder.position must be one of pre, post" in line for line in lines) == 2
    assert lines[-1].startswith("error: none of the 2 jobs of this sweep is valid")


# ----------------------------------------------------------------------------------------- 4. no updates
@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (["experiment=mt10_mtrl", "total_steps=500"], "warmup_steps=15000 with total_steps=500"),
        (["experiment=mt10_fast", "total_steps=3200"], "warmup_steps=40000 with total_steps=3200"),
        (["experiment=smoke", "batch_size_per_task=200", "total_steps=300"], "batch_size_per_task=200"),
    ],
)
def test_configs_that_can_never_update_are_refused(tmp_path, overrides, fragment):
    with pytest.raises(UserError, match="the run would end before its first update") as err:
        dry_build(smoke_run_config(tmp_path / "run", *overrides))
    assert fragment in str(err.value)


def test_the_last_vector_step_that_can_update_is_accepted(tmp_path):
    # smoke: 2 tasks, warm-up 200, 16 per task: the vector step at 232 stores 16 per task and updates once
    dry_build(smoke_run_config(tmp_path / "run", "warmup_steps=200", "total_steps=234"))
    with pytest.raises(UserError, match="stores about 15 transitions per task"):
        dry_build(smoke_run_config(tmp_path / "run", "warmup_steps=0", "total_steps=32"))


# ----------------------------------------------------------------------------------------- 5. divergence
def test_the_guard_stops_on_an_exploding_loss_that_is_still_finite():
    guard = DivergenceGuard(["a", "b"])
    guard.observe({"critic_loss": torch.tensor([1.0, 2.0])}, 0)
    guard.check("step", 0)
    guard.observe({"critic_loss": torch.tensor([1.0, 7.7e25])}, 1)
    with pytest.raises(RunFailed, match=r"critic_loss of b became non-finite or passed 1e\+08 at update 1"):
        guard.check("step", 5)
    assert ABS_LIMIT == 1e8


def test_the_guard_stops_on_a_loss_grown_a_million_fold_over_its_median():
    guard = DivergenceGuard(["a"])
    for value in (2.0, 3.0, 2.5):
        guard.check_growth({"actor_loss": torch.tensor([value]), "alpha": torch.tensor([1e9])}, "step", 0)
    guard.check_growth({"actor_loss": torch.tensor([2.5e5])}, "step", 1)  # 1e5 times: still learning
    with pytest.raises(RunFailed, match=r"actor_loss of a exploded to 1e\+07"):
        guard.check_growth({"actor_loss": torch.tensor([1e7])}, "step", 2)


def test_a_non_finite_optimiser_moment_refuses_the_checkpoint():
    state = {"actor": {"w": torch.ones(2)}, "actor_optim": {"state": {0: {"exp_avg_sq": torch.tensor([1.0, 1e39])}}}}
    check_finite_state({"actor": state["actor"]}, "step", 3)
    with pytest.raises(RunFailed, match=r"actor_optim\.state\.0\.exp_avg_sq is non-finite at step 3"):
        check_finite_state(state, "step", 3)


def test_a_diverging_run_exits_1_naming_the_loss_and_writes_no_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("train.py", *SMOKE, f"run_dir={run_dir}", "agent.actor_lr=1000", "total_steps=3000")
    assert_one_line_error(proc, "training diverged", "_loss of", status=1)
    assert checkpoint.list_checkpoints(run_dir) == []
    assert not (run_dir / "checkpoints" / checkpoint.BEST).exists()


# ----------------------------------------------------------------------------------------- 6. loss signs
@pytest.mark.parametrize(
    "name,options,agent,allowed",
    [
        ("famo", {}, "sac", "[critic]"),
        ("igb", {}, "sac", "[critic]"),
        ("paretomtl", {}, "sac", "[critic]"),
        ("mgda", {"normalization": "loss"}, "sac", "[critic]"),
        ("pcgrad", {"loss_weighting": "famo"}, "sac", "[critic]"),
    ],
)
def test_positive_loss_balancers_are_refused_on_signed_losses(tmp_path, name, options, agent, allowed):
    config = smoke_run_config(tmp_path / "run")
    built = construct_agent(config, ["reach-v3", "drawer-close-v3"], 39, 4, torch.device("cpu"))
    with pytest.raises(UserError, match=rf"needs positive task losses .* actor loss can be negative; .*{allowed}"):
        build_balancers(BalancerConfig(name, ["critic", "actor"], options), built)
    build_balancers(BalancerConfig(name, ["critic"], options), built)  # the squared TD error is fine
    assert BalancerConfig(name, None, options).apply_to == (["critic"] if name != "mgda" else ["critic", "actor"])


# ----------------------------------------------------------------------------------------- 7-9. entry points
def test_python_m_mtrl_data_collect_is_the_collect_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "mtrl.data.collect", "env=mt10"], cwd=ROOT, capture_output=True, text=True
    )
    assert_one_line_error(proc, "output=None")


def test_which_best_with_a_checkpoint_file_is_refused(tmp_path):
    file = tmp_path / "run" / "checkpoints" / "step_000000000300.pt"
    file.parent.mkdir(parents=True)
    file.write_bytes(b"x")
    proc = run_cli("evaluate.py", f"checkpoint={file}", "which=best")
    assert_one_line_error(proc, "which=best", str(tmp_path / "run"))


def test_a_dataset_given_as_a_checkpoint_is_called_a_dataset(tmp_path):
    import h5py

    with h5py.File(tmp_path / "data.h5", "w") as handle:
        handle.attrs["format"] = "mtrl-offline"
    with pytest.raises(UserError, match="is an HDF5 file \\(an offline dataset\\), not a checkpoint"):
        checkpoint.load(tmp_path / "data.h5")


@pytest.mark.parametrize(
    "script,args,fragment,absent",
    [
        ("train.py", ["balancer=nashmtl", "balancer.variant=mtrl"], "balancer has the options: apply_to", "mean"),
        ("train.py", ["balancer=famo", "balancer.loss_weighting=igb"], "balancer has the options: apply_to", "mean"),
        ("train.py", ["replay_device=cuda:0"], "replay_device='cuda:0' but CUDA", "device='cuda"),
        ("evaluate.py", ["checkpoint=x", "episodes=1"], "did you mean episodes_per_task?", "video_episodes"),
    ],
)
def test_hints_name_the_right_option(tmp_path, script, args, fragment, absent):
    if script == "train.py" and not args[0].startswith("balancer"):
        if torch.cuda.is_available():
            pytest.skip("CUDA is here: replay_device=cuda is valid")
    proc = run_cli(script, *(SMOKE + [f"run_dir={tmp_path}/r"] if script == "train.py" else []), *args)
    assert_one_line_error(proc, fragment)
    assert absent not in proc.stderr.replace(fragment, "")


# ----------------------------------------------------------------------------------------- a newcomer
def test_train_prints_its_absolute_run_directory_first_and_the_next_commands_last(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("train.py", *SMOKE, f"run_dir={run_dir}", "eval_every=0", "total_steps=300")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"run directory: {run_dir.resolve()}"
    tail = "\n".join(lines[-4:])
    assert f"python evaluate.py checkpoint={run_dir.resolve()}" in tail
    assert f"python -m mtrl.report {run_dir.resolve()}" in tail
    assert f"tensorboard --logdir {run_dir.resolve()}/tb" in tail


def test_evaluation_json_records_the_checkpoint_its_step_and_config_hash(tmp_path):
    run_dir = tmp_path / "run"
    Trainer(smoke_run_config(run_dir, "total_steps=300", "eval_every=0"), run_dir).run()
    out = tmp_path / "eval.json"
    proc = run_cli("evaluate.py", f"checkpoint={run_dir}", f"output={out}", "progress=false")
    assert proc.returncode == 0, proc.stderr
    source = json.loads(out.read_text())["source"]
    file, state = checkpoint.load(run_dir)
    assert source == {
        "policy": "agent",
        "checkpoint": str(file.resolve()),
        "step": 300,
        "config_hash": checkpoint.config_hash(state["config"]),
    }


def test_mt10_short_says_what_to_expect():
    from mtrl.config.parse import parse_train

    config = parse_train(compose_config("train", ["experiment=mt10_short"]))
    assert "success near 0 is expected" in config.note and "benchmarks/learning.py" in config.note


# ----------------------------------------------------------------------------------------- the update path
@pytest.mark.parametrize(
    "overrides,equal",
    [
        ([], True),
        (["curriculum=learning_progress"], False),
        (["curriculum=learning_progress", "curriculum.drives=env"], True),
    ],
)
def test_the_update_path_is_chosen_when_the_agent_is_built(tmp_path, overrides, equal):
    from mtrl.agents.factory import build_agent

    agent = build_agent(smoke_run_config(tmp_path / "r", "compile=default", *overrides), ["a", "b"], 39, 4)
    assert agent.plan.equal_counts is equal and agent.plan.compiled is equal  # unequal counts stay eager
    assert all(objective.plan == agent.plan for objective in agent.objectives.values())
    assert (agent._update_step == agent.update_step) is not equal
