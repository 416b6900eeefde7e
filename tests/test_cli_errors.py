"""Bad input ends with one clear line naming the bad value, and never damages what a run wrote."""

from __future__ import annotations

import hashlib

import pytest

from mtrl.io import checkpoint
from mtrl.train.trainer import Trainer
from tests.conftest import assert_one_line_error, run_cli, smoke_run_config


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["env.tasks=[reech-v3]"], ["reech-v3", "reach-v3"]),
        (["env.tasks=mt11"], ["mt11", "mt10, mt25, mt50"]),
        (["env=mt99"], ["env=mt99", "mt10"]),
        (["env.protocol=foo"], ["'foo'", "metaworld, mtrl"]),
        (["foo=1"], ["unknown option foo"]),
        (["total_steps=-5"], ["total_steps=-5", "integer >= 1"]),
        (["agent.gamma=2"], ["agent.gamma=2", "[0, 1]"]),
        (["encoder.name=nope"], ["'nope'", "onehot"]),
    ],
)
def test_train_rejects_bad_config(tmp_path, args, fragments):
    assert_one_line_error(run_cli("train.py", "experiment=smoke", f"run_dir={tmp_path / 'r'}", *args), *fragments)
    assert not (tmp_path / "r").exists()  # a rejected run leaves no (empty) run directory behind


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["seed=1,2", "balancer=uniform,nope"], ["balancer=nope", "pcgrad"]),
        (["seed=1,2", "agent.gama=0.9,0.99"], ["agent.gama"]),
        (["hydra/launcher=nope"], ["hydra/launcher=nope", "local"]),
    ],
)
def test_sweeps_check_every_swept_value_first(tmp_path, args, fragments):
    proc = run_cli("train.py", "-m", "experiment=smoke", f"hydra.sweep.dir={tmp_path / 'sweep'}", *args)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "sweep").exists()  # no job started


def test_evaluate_rejects_missing_and_corrupt_checkpoints(tmp_path):
    assert_one_line_error(run_cli("evaluate.py", f"checkpoint={tmp_path / 'none'}"), "does not exist")
    assert_one_line_error(run_cli("evaluate.py", f"checkpoint={tmp_path}"), "no checkpoint found")
    bad = tmp_path / "checkpoints" / "step_000000000001.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    assert_one_line_error(run_cli("evaluate.py", f"checkpoint={tmp_path}"), "corrupt", str(bad))
    assert_one_line_error(run_cli("evaluate.py", "policy=scripted"), "env=mt10")
    assert_one_line_error(run_cli("evaluate.py", "policy=greedy"), "policy='greedy'", "scripted")


def _digest(run_dir):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in checkpoint.list_checkpoints(run_dir)}


def test_mismatched_or_truncated_checkpoints_are_rejected_without_damage(tmp_path):
    run_dir = tmp_path / "run"
    Trainer(smoke_run_config(run_dir, "total_steps=300", "eval_every=0"), run_dir).run()
    before = _digest(run_dir)
    base = ["experiment=smoke", f"resume={run_dir}", "total_steps=600"]
    assert_one_line_error(run_cli("train.py", *base, "env.tasks=[reach-v3,push-v3]"), "reach-v3", "push-v3")
    assert_one_line_error(
        run_cli("train.py", *base, "agent.hidden_sizes=[64,64]"),
        "do not fit",
        "agent.hidden_sizes: [32, 32] -> [64, 64]",
    )
    assert_one_line_error(run_cli("evaluate.py", f"checkpoint={run_dir}", "env=mt10"), "trained on tasks")
    assert _digest(run_dir) == before

    truncated = tmp_path / "truncated.pt"
    data = checkpoint.list_checkpoints(run_dir)[-1].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_cli("evaluate.py", f"checkpoint={truncated}"), "corrupt")
