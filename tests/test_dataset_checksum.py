"""A dataset's metadata carries a checksum: a changed byte in its provenance is refused, not loaded (issue #13);
files written before the checksum existed still load, with a warning line."""

from __future__ import annotations

import json
import shutil

import h5py
import pytest

from mtrl.config.parse import parse_collect
from mtrl.data.collect import collect
from mtrl.data.dataset import CHECKSUM, load_dataset, metadata_digest
from mtrl.errors import UserError
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    cfg = compose_config(
        "collect",
        [
            "env.tasks=[reach-v3]",
            "env.protocol=mtrl",
            "env.horizon=10",
            "episodes_per_task=1",
            "noise=0.25",
            "progress=false",
            f"output={tmp_path_factory.mktemp('data') / 'tiny.h5'}",
        ],
    )
    return collect(parse_collect(cfg))


@pytest.fixture
def copy(dataset_path, tmp_path):
    path = tmp_path / "copy.h5"
    shutil.copy(dataset_path, path)
    return path


def test_a_written_dataset_carries_the_checksum_of_its_metadata(dataset_path):
    with h5py.File(dataset_path, "r") as file:
        assert file.attrs[CHECKSUM] == metadata_digest(file) and len(file.attrs[CHECKSUM]) == 64
    assert load_dataset(dataset_path).collection["noise"] == 0.25


def test_a_flipped_byte_in_the_root_metadata_is_refused(copy):
    data = copy.read_bytes()
    at = data.index(b'"episodes_per_task": 1')  # in the root `collection` JSON, stored verbatim in the file
    assert data.count(b'"episodes_per_task": 1') == 1
    flipped = bytearray(data)
    flipped[at + len(b'"episodes_per_task": ')] = ord("7")  # still valid JSON, a false provenance
    copy.write_bytes(bytes(flipped))
    with pytest.raises(UserError, match="fails its metadata checksum") as err:
        load_dataset(copy)
    assert str(copy) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "edit",
    [
        lambda f: f.attrs.__setitem__("benchmark", "mt50"),
        lambda f: f.attrs.__setitem__("collection", json.dumps({"policy": "expert"})),
        lambda f: f["tasks/reach-v3"].attrs.__setitem__("source", json.dumps({"noise": 0.0})),
    ],
)
def test_edited_provenance_is_refused(copy, edit):
    with h5py.File(copy, "r+") as file:
        edit(file)
    with pytest.raises(UserError, match="fails its metadata checksum"):
        load_dataset(copy)


def test_a_dataset_without_a_checksum_loads_with_a_warning_line(copy, capfd):
    with h5py.File(copy, "r+") as file:
        del file.attrs[CHECKSUM]  # as written before the checksum existed
    assert load_dataset(copy).task_names == ["reach-v3"]
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: dataset '{copy}' has no metadata checksum")
