"""Per-task stratified replay."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mtrl.errors import UserError
from mtrl.train.replay import DeviceStorage, MultiTaskReplay, allocate, field_widths


def _filled(num_tasks=3, capacity=50, steps=80):
    replay = MultiTaskReplay(num_tasks, capacity, obs_dim=5, act_dim=2, seed=0)
    for t in range(steps):
        obs = np.array([[task * 1000 + t] * 5 for task in range(num_tasks)], np.float32)
        replay.add(
            np.arange(num_tasks), obs, np.zeros((num_tasks, 2)), np.full(num_tasks, t), obs + 0.5, np.zeros(num_tasks)
        )
    return replay


def test_each_task_chunk_holds_only_that_tasks_data():
    replay = _filled()
    batch = replay.sample(np.array([4, 7, 2]))
    assert batch.counts == (4, 7, 2) and len(batch) == 13
    assert batch.task_ids.tolist() == [0] * 4 + [1] * 7 + [2] * 2
    owner = (batch.obs[:, 0] // 1000).long()
    assert owner.tolist() == batch.task_ids.tolist()
    # Ring buffer: capacity 50 of 80 steps keeps the newest 50 (t >= 30).
    assert (batch.obs[:, 0] % 1000 >= 30).all()
    assert np.allclose(batch.next_obs - batch.obs, 0.5)


def test_sizes_and_empty_task_error():
    replay = MultiTaskReplay(2, 10, 3, 1, seed=0)
    replay.add(np.array([0]), np.zeros((1, 3)), np.zeros((1, 1)), np.zeros(1), np.zeros((1, 3)), np.zeros(1))
    assert replay.sizes.tolist() == [1, 0]
    with pytest.raises(RuntimeError, match=r"tasks \[1\]"):
        replay.sample(np.array([1, 1]))


@given(total=st.integers(0, 2000), shares=st.lists(st.floats(0, 10), min_size=1, max_size=50))
def test_allocate_sums_and_follows_shares(total, shares):
    shares = np.array(shares)
    if shares.sum() <= 0:
        with pytest.raises(UserError):
            allocate(total, shares)
        return
    counts = allocate(total, shares)
    assert counts.sum() == total and (counts >= 0).all()
    assert np.all(np.abs(counts - total * shares / shares.sum()) < 1.0 + 1e-9)


def test_state_round_trip_reproduces_samples():
    replay = _filled()
    clone = MultiTaskReplay(3, 50, 5, 2, seed=99)
    clone.load_state_dict(replay.state_dict())
    a, b = replay.sample(np.array([5, 5, 5])), clone.sample(np.array([5, 5, 5]))
    assert (a.obs == b.obs).all() and (a.reward == b.reward).all()


def _device_replay(num_tasks=3, capacity=50, seed=0):
    """A replay whose storage is DeviceStorage (what a CUDA replay uses), here on the CPU."""
    replay = MultiTaskReplay(num_tasks, capacity, obs_dim=5, act_dim=2, seed=seed)
    replay.storage = DeviceStorage(num_tasks, capacity, field_widths(5, 2), seed, torch.device("cpu"))
    return replay


@pytest.mark.parametrize("task_ids", [[0, 1, 2], [2, 0, 2, 1, 2]])
def test_device_storage_holds_what_host_storage_holds_and_samples_each_tasks_rows(task_ids):
    host, device = MultiTaskReplay(3, 4, 5, 2, seed=0), _device_replay(capacity=4)
    rng = np.random.default_rng(0)
    ids = np.array(task_ids)
    for _ in range(7):  # wraps around the rings; repeated ids fill consecutive slots
        rows = (
            ids,
            rng.normal(size=(len(ids), 5)),
            rng.normal(size=(len(ids), 2)),
            rng.normal(size=len(ids)),
            rng.normal(size=(len(ids), 5)),
            rng.uniform(size=len(ids)) < 0.5,
        )
        host.add(*rows)
        device.add(*rows)
    saved = device.state_dict()
    for name, values in host.state_dict()["storage"].items():
        np.testing.assert_array_equal(saved["storage"][name], values)
    batch = device.sample((3, 0, 5))
    assert batch.counts == (3, 0, 5) and batch.task_ids.tolist() == [0] * 3 + [2] * 5
    stored = host.storage.arrays["obs"]
    for row, task in zip(batch.obs.numpy(), batch.task_ids.tolist()):
        assert any(np.array_equal(row, s) for s in stored[task])
    clone = _device_replay(capacity=4, seed=7)
    clone.load_state_dict(device.state_dict())
    assert torch.equal(clone.sample((4, 4, 4)).obs, device.sample((4, 4, 4)).obs)  # the stream resumes too


def test_replay_device_values_are_checked(tmp_path):
    from tests.conftest import smoke_run_config

    with pytest.raises(UserError, match="replay_device='gpu' is not allowed"):
        smoke_run_config(tmp_path, "replay_device=gpu")
    assert smoke_run_config(tmp_path, "replay_device=cuda:1").replay_device == "cuda:1"
