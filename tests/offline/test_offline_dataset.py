"""Offline datasets on real Meta-World data: collection, round trip, atomic writes, summary, bad files rejected."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from envs import build_env_spec
from mtrl.config.parse import parse_collect
from mtrl.data import collect as collect_mod
from mtrl.data.collect import TaskPlan, collect, collect_task, plan_tasks
from mtrl.data.dataset import ARRAY_FIELDS, load_dataset, write_dataset
from mtrl.data.summary import main as summary_main
from mtrl.data.summary import task_rows
from mtrl.errors import UserError
from tests.conftest import compose_config

TASKS = "[reach-v3,push-v3]"
PER_TASK = "per_task={push-v3:{noise:1.0,random_fraction:0.5,episodes:1}}"


def collect_config(output, *overrides, per_task=PER_TASK):
    return parse_collect(
        compose_config(
            "collect",
            [
                f"env.tasks={TASKS}",
                "env.protocol=mtrl",
                "env.horizon=20",
                "episodes_per_task=2",
                "noise=0.1",
                per_task,
                f"output={output}",
                "progress=false",
                *overrides,
            ],
        )
    )


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    return collect(collect_config(tmp_path_factory.mktemp("data") / "tiny.h5"))


def test_collection_follows_the_per_task_plan(dataset_path):
    data = load_dataset(dataset_path)
    assert data.task_names == ["reach-v3", "push-v3"] and data.protocol["name"] == "mtrl"
    reach, push = data.tasks["reach-v3"], data.tasks["push-v3"]
    assert (reach.num_episodes, len(reach)) == (2, 40) and (push.num_episodes, len(push)) == (1, 20)
    assert reach.source["noise"] == 0.1 and reach.source["random_fraction"] == 0.0
    assert push.source["noise"] == 1.0 and push.source["random_fraction"] == 0.5
    assert reach.source["policy"] == "scripted" and data.collection["seed"] == 0
    for task in (reach, push):
        # Episodes are contiguous, truncated at the horizon, and next_obs[t] == obs[t + 1] inside an episode.
        same_episode = task.episode[1:] == task.episode[:-1]
        np.testing.assert_array_equal(task.next_obs[:-1][same_episode], task.obs[1:][same_episode])
        assert task.truncated.sum() == task.num_episodes and task.truncated[-1] and not task.terminated.any()
        assert np.abs(task.action).max() <= 1.0 and task.qpos.shape[0] == len(task)
        assert len(task.goals) == 1 and task.arm_qpos_index.shape == (9,)


def test_round_trip_keeps_every_field_and_the_metadata(tmp_path):
    spec = build_env_spec({"tasks": ["reach-v3", "drawer-close-v3"], "protocol": "mtrl", "horizon": 15}, seed=0)
    cfg = collect_config(tmp_path / "unused.h5", per_task="per_task=null")
    plans = [TaskPlan("reach-v3", 2, 0.3, 0.2), TaskPlan("drawer-close-v3", 1, 0.0, 0.0)]
    acts = collect_mod.make_policies(cfg, spec)[0]
    written = [collect_task(spec, plan, acts[plan.task], seed=3, task_index=i) for i, plan in enumerate(plans)]
    two_task_spec = spec
    meta = dict(
        benchmark=two_task_spec.benchmark,
        task_names=two_task_spec.task_names,
        protocol=two_task_spec.protocol.to_dict(),
        goal_seed=two_task_spec.goal_seed,
        obs_dim=39,
        act_dim=4,
        collection={"note": "round trip"},
    )
    path = write_dataset(tmp_path / "rt.h5", meta, written)
    loaded = load_dataset(path)
    assert loaded.task_names == two_task_spec.task_names and loaded.collection == {"note": "round trip"}
    assert loaded.protocol == two_task_spec.protocol.to_dict() and loaded.goal_seed == two_task_spec.goal_seed
    for original in written:
        back = loaded.tasks[original.name]
        for name in ARRAY_FIELDS:
            a, b = getattr(original, name), getattr(back, name)
            assert b.dtype == np.dtype(ARRAY_FIELDS[name][0]) and b.shape == np.asarray(a).shape, name
            np.testing.assert_array_equal(b, np.asarray(a).astype(b.dtype), err_msg=name)
        assert back.goals == [g.data for g in two_task_spec.goals[original.name][:1]]
        np.testing.assert_array_equal(back.arm_qpos_index, original.arm_qpos_index)
        assert back.source == original.source
    with pytest.raises(UserError, match="already exists"):
        write_dataset(tmp_path / "rt.h5", meta, written)


def test_interrupted_collection_leaves_no_dataset(tmp_path, monkeypatch):
    real = collect_mod.collect_task
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(collect_mod, "collect_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        collect(collect_config(tmp_path / "x.h5"))
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor a temporary file


def test_summary_reports_per_task_statistics(dataset_path, capsys):
    rows = {r["task"]: r for r in task_rows(load_dataset(dataset_path, with_state=False))}
    reach = load_dataset(dataset_path).tasks["reach-v3"]
    returns = reach.episode_stats()["returns"]
    assert rows["reach-v3"]["episodes"] == 2 and rows["reach-v3"]["transitions"] == 40
    assert rows["reach-v3"]["return_mean"] == pytest.approx(returns.mean())
    assert rows["push-v3"]["noise"] == 1.0
    assert summary_main([str(dataset_path)]) == 0
    out = capsys.readouterr().out
    assert "reach-v3" in out and "push-v3" in out and "success" in out and "return mean" in out


# ----------------------------------------------------------------------------------------- bad files
def _copy(dataset_path, tmp_path, name="copy.h5"):
    path = tmp_path / name
    shutil.copy(dataset_path, path)
    return path


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_and_non_hdf5_files_are_rejected(tmp_path):
    with pytest.raises(UserError, match="does not exist") as err:
        load_dataset(tmp_path / "nope.h5")
    _one_line(err)
    text = tmp_path / "text.h5"
    text.write_text("not a dataset")
    with pytest.raises(UserError, match="not a readable HDF5 file") as err:
        load_dataset(text)
    _one_line(err)


def test_truncated_dataset_is_rejected(dataset_path, tmp_path):
    path = _copy(dataset_path, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt") as err:
        load_dataset(path)
    assert str(path) in _one_line(err)


def test_flipped_bytes_in_the_data_fail_the_checksum(dataset_path, tmp_path):
    path = _copy(dataset_path, tmp_path)
    with h5py.File(path, "r") as file:
        offset = file["tasks/push-v3/reward"].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as handle:
        handle.seek(offset + 8)
        byte = handle.read(1)
        handle.seek(offset + 8)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(UserError, match="corrupt: 'tasks/push-v3/reward' cannot be read") as err:
        load_dataset(path)
    _one_line(err)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda f: f.attrs.__setitem__("complete", False), "is incomplete"),
        (lambda f: f.attrs.__setitem__("format", "something-else"), "not an mtrl offline dataset"),
        (lambda f: f.attrs.__setitem__("format_version", 99), "format version 99"),
        (lambda f: f.__delitem__("tasks/reach-v3/reward"), "missing 'tasks/reach-v3/reward'"),
        (lambda f: f.__delitem__("tasks/push-v3"), "missing the group 'tasks/push-v3'"),
        (lambda f: f["tasks/reach-v3"].attrs.__setitem__("transitions", 7), "declares 7 transitions"),
    ],
)
def test_damaged_metadata_is_rejected(dataset_path, tmp_path, edit, message):
    path = _copy(dataset_path, tmp_path)
    with h5py.File(path, "r+") as file:
        edit(file)
    with pytest.raises(UserError, match=message) as err:
        load_dataset(path)
    _one_line(err)


def test_task_set_is_checked_against_the_config(dataset_path):
    with pytest.raises(UserError, match="no data for drawer-close-v3") as err:
        load_dataset(dataset_path, tasks=["reach-v3", "drawer-close-v3"])
    assert "reach-v3, push-v3" in _one_line(err)
    subset = load_dataset(dataset_path, tasks=["push-v3"])
    assert subset.task_names == ["push-v3"] and list(subset.tasks) == ["push-v3"]


def test_bad_collection_options_are_one_line_errors(tmp_path):
    for overrides, message in [
        (
            ["per_task={push-v3:{nosie:1.0}}"],
            "unknown option per_task.push-v3.nosie .did you mean per_task.push-v3.noise",
        ),
        (["per_task={door-open-v3:{noise:1.0}}"], "not one of env.tasks"),
        (["random_fraction=1.5"], r"random_fraction=1.5 is not allowed; expected a finite number in \[0, 1\]"),
        (["episodes_per_task=0"], "episodes_per_task=0 is not allowed"),
    ]:
        per_task = overrides[0] if overrides[0].startswith("per_task") else PER_TASK
        with pytest.raises(UserError, match=message):
            cfg = collect_config(tmp_path / "x.h5", *[o for o in overrides if o != per_task], per_task=per_task)
            plan_tasks(cfg, ["reach-v3", "push-v3"])
    with pytest.raises(UserError, match="output=None is not allowed; expected the .h5 dataset file"):
        collect_config("null")
    with pytest.raises(UserError, match="policy='greedy' is not allowed"):
        collect_config(tmp_path / "y.h5", "policy=greedy")
