"""logger=wandb|both: a real W&B run in offline mode (no network) beside TensorBoard, named and identified by
the run directory, with the run's config and the same metrics."""

from __future__ import annotations

import pytest

from mtrl.errors import UserError
from mtrl.io.wandb_writer import run_id
from mtrl.train.trainer import Trainer
from tests.conftest import smoke_run_config

pytest.importorskip("wandb")


def test_both_loggers_write_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    Trainer(smoke_run_config(run_dir, "total_steps=300", "logger=both"), run_dir).run()
    assert any((run_dir / "tb").iterdir())
    runs = list((run_dir / "wandb").glob(f"offline-run-*-{run_id(run_dir)}"))
    assert len(runs) == 1, list((run_dir / "wandb").iterdir())
    records = next(runs[0].glob("run-*.wandb")).read_bytes()
    for tag in (b"sac/critic_loss/mean", b"train/return/reach-v3", b"eval/success/mean", b"batch_size_per_task"):
        assert tag in records, tag


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    Trainer(smoke_run_config(run_dir, "total_steps=300", "logger=wandb"), run_dir).run()
    Trainer(smoke_run_config(run_dir, "total_steps=600", "logger=wandb", f"resume={run_dir}"), run_dir).run()
    ids = {path.name.rsplit("-", 1)[1] for path in (run_dir / "wandb").glob("offline-run-*")}
    assert ids == {run_id(run_dir)}
    assert not (run_dir / "tb").exists()


def test_bad_logger_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"logger.*tensorboard, wandb, both"):
        smoke_run_config(tmp_path / "x", "logger=mlflow")
