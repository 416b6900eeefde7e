"""Minari interop: export a dataset as one Minari dataset per task (real Minari, a temporary local store), read
the namespace back as the same dataset, and train from it exactly as from the HDF5 file."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from mtrl.data.dataset import STATE_FIELDS, TRANSITION_FIELDS, load_dataset
from mtrl.errors import UserError
from mtrl.io import checkpoint
from mtrl.train.offline_trainer import OfflineTrainer
from tests.conftest import collect_smoke_data, smoke_run_config

minari = pytest.importorskip("minari")
from mtrl.data.minari import META_KEY, export, load_namespace, main  # noqa: E402


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    return collect_smoke_data(tmp_path_factory.mktemp("data") / "smoke.h5")


def test_export_writes_one_dataset_per_task_with_provenance(store, dataset_path):
    ids = export(dataset_path, "smoke")
    assert ids == ["smoke/reach-v0", "smoke/drawer-close-v0"]
    assert set(minari.list_local_datasets(prefix="smoke")) == set(ids)
    reach = minari.load_dataset("smoke/reach-v0")
    assert reach.total_episodes == 2 and reach.total_steps == 40
    episode = next(reach.iterate_episodes())
    assert episode.observations.shape == (21, 39) and episode.actions.shape == (20, 4)
    assert episode.truncations[-1] and not episode.terminations.any()
    info = json.loads(reach.storage.metadata[META_KEY])
    original = load_dataset(dataset_path)
    assert info["dataset_id"] == original.dataset_id and info["source"] == original.tasks["reach-v3"].source
    assert info["protocol"]["name"] == "mtrl" and len(info["goals"]) == len(original.tasks["reach-v3"].goals)


def test_the_namespace_reads_back_as_the_same_dataset(store, dataset_path):
    export(dataset_path, "smoke")
    original, back = load_dataset(dataset_path), load_dataset("minari:smoke")
    assert back.task_names == original.task_names and back.dataset_id == original.dataset_id
    for name in original.task_names:
        a, b = original.tasks[name], back.tasks[name]
        for key in TRANSITION_FIELDS + STATE_FIELDS:
            np.testing.assert_array_equal(getattr(b, key), getattr(a, key), err_msg=f"{name}.{key}")
            assert getattr(b, key).dtype == getattr(a, key).dtype, key
        assert b.goals == a.goals and b.source == a.source
        np.testing.assert_array_equal(b.arm_qpos_index, a.arm_qpos_index)
    assert load_namespace("smoke", tasks=["drawer-close-v3"]).task_names == ["drawer-close-v3"]


@pytest.mark.parametrize("sharing", ["none", "all"])
def test_training_from_the_namespace_equals_training_from_the_file(tmp_path, store, dataset_path, sharing):
    export(dataset_path, "smoke")
    actors = []
    for source in (str(dataset_path), "minari:smoke"):
        run_dir = tmp_path / f"{sharing}-{source.replace(':', '_').replace('/', '_')}"
        args = ("mode=offline", f"dataset={source}", f"sharing={sharing}", "total_steps=20", "eval_every=0")
        OfflineTrainer(smoke_run_config(run_dir, *args, "checkpoint_every=0", "log_every=10"), run_dir).run()
        actors.append(checkpoint.load(run_dir)[1]["agent"]["actor"])
    for key in actors[0]:
        assert torch.equal(actors[0][key], actors[1][key]), key


def test_errors_are_one_line(store, dataset_path, capsys):
    with pytest.raises(UserError, match=r"no Minari datasets under namespace 'nothing'.*export"):
        load_dataset("minari:nothing")
    export(dataset_path, "smoke")
    with pytest.raises(UserError, match=r"smoke/reach-v0 already exists.*--overwrite"):
        export(dataset_path, "smoke")
    assert export(dataset_path, "smoke", overwrite=True)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(dataset_path), "--namespace", "smoke"])
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: Minari dataset smoke/reach-v0 already exists")
    assert sys.modules["mtrl.data.minari"].PREFIX == "minari:"
