"""End-to-end smoke runs on real Meta-World envs: train, checkpoint, resume, evaluate, determinism."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import torch

from mtrl.io import checkpoint
from mtrl.train.trainer import Trainer
from tests.conftest import ROOT, run_cli, smoke_run_config


def _actor_params(run_dir):
    _, state = checkpoint.load(run_dir)
    return state["agent"]["actor"]


def test_smoke_train_checkpoint_resume_evaluate(tmp_path):
    run_dir = tmp_path / "run"
    Trainer(smoke_run_config(run_dir, "total_steps=300"), run_dir).run()
    assert [p.name for p in checkpoint.list_checkpoints(run_dir)] == ["step_000000000300.pt"]
    assert (run_dir / "tb").is_dir() and any((run_dir / "tb").iterdir())

    resumed = Trainer(smoke_run_config(run_dir, "total_steps=600", f"resume={run_dir}"), run_dir)
    assert resumed.step == 300 and resumed.updates > 0
    result = resumed.run()
    assert resumed.step == 600
    assert [p.name for p in checkpoint.list_checkpoints(run_dir)] == ["step_000000000300.pt", "step_000000000600.pt"]
    assert [t.task for t in result.tasks] == ["reach-v3", "drawer-close-v3"]

    proc = run_cli("evaluate.py", f"checkpoint={run_dir}", "episodes_per_task=1")
    assert proc.returncode == 0, proc.stderr
    written = run_dir / "checkpoints" / "step_000000000600_eval_mtrl.json"
    data = json.loads(written.read_text())
    assert [t["task"] for t in data["tasks"]] == ["reach-v3", "drawer-close-v3"]
    assert data["protocol"] == "mtrl" and written.with_suffix(".csv").is_file()
    assert "mean over tasks" in proc.stdout


def test_runs_are_deterministic_given_a_seed(tmp_path):
    params = []
    for name in ("a", "b"):
        run_dir = tmp_path / name
        Trainer(smoke_run_config(run_dir, "total_steps=400", "eval_every=0", "checkpoint_every=0"), run_dir).run()
        params.append(_actor_params(run_dir))
    for key in params[0]:
        assert torch.equal(params[0][key], params[1][key]), key


def test_replay_is_saved_when_asked(tmp_path):
    run_dir = tmp_path / "run"
    Trainer(smoke_run_config(run_dir, "total_steps=300", "save_replay=true"), run_dir).run()
    _, state = checkpoint.load(run_dir)
    assert state["replay"]["sizes"].tolist() == [150, 150]
    resumed = Trainer(smoke_run_config(run_dir, "total_steps=600", "save_replay=true", f"resume={run_dir}"), run_dir)
    assert resumed.replay.sizes.tolist() == [150, 150]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "train.py",
            "experiment=smoke",
            f"run_dir={run_dir}",
            "total_steps=1000000",
            "checkpoint_every=0",
            "eval_every=0",
            "progress=false",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (run_dir / "tb").is_dir() and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    saved = checkpoint.list_checkpoints(run_dir)
    assert len(saved) == 1 and "stop requested" in out + err
    _, state = checkpoint.load(saved[0])
    assert 0 < state["step"] < 1000000
