"""Data-sharing batches on a hand-built store and a hand-built Q function: none, all, cds, cds_zero."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtrl.data.sharing import TransitionStore, assemble, cds_filter, check_mode, make_batch, sample_indices
from mtrl.errors import UserError

SIZES = (30, 50, 20)  # unequal task datasets
OWN, SHARED = 16, 24


def hand_built_store() -> TransitionStore:
    """obs[:, 0] = the row's global index, obs[:, 1] = a score; reward of row g for task i = 1000 i + g."""
    rng = np.random.default_rng(0)
    obs, action, reward, next_obs, terminated = [], [], [], [], []
    start = 0
    for n in SIZES:
        index = np.arange(start, start + n)
        o = np.zeros((n, 5), np.float32)
        o[:, 0] = index
        o[:, 1] = rng.normal(size=n)
        obs.append(o)
        action.append(rng.uniform(-1, 1, (n, 2)).astype(np.float32))
        next_obs.append(o + 0.5)
        terminated.append(np.zeros(n, np.float32))
        start += n
    offsets = np.concatenate([[0], np.cumsum(SIZES)])
    for i in range(len(SIZES)):
        reward.append((1000.0 * i + np.arange(offsets[i], offsets[i + 1])).astype(np.float32))
    relabelled = {
        (i, j): (1000.0 * i + np.arange(offsets[j], offsets[j + 1])).astype(np.float32)
        for i in range(3)
        for j in range(3)
        if i != j
    }
    return TransitionStore.from_arrays(obs, action, reward, next_obs, terminated, relabelled)


def hand_q(obs: torch.Tensor, action: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
    """Q_i(s, a) = score(s) * (i + 1) + a_0: a different function per task."""
    return obs[:, 1] * (task_ids.to(obs.dtype) + 1) + action[:, 0]


def _rows(batch, i):
    start = sum(batch.counts[:i])
    return slice(start, start + int(batch.counts[i]))


def test_store_layout_and_rewards():
    store = hand_built_store()
    assert store.offsets.tolist() == [0, 30, 80, 100] and store.has_relabelled_rewards()
    assert store.rewards[2, 35] == 2035 and store.source[35] == 1


def test_candidates_come_only_from_other_tasks():
    store = hand_built_store()
    own, cand = sample_indices(np.random.default_rng(1), store.offsets, 200, 400)
    for i in range(3):
        assert (store.source[own[i]] == i).all()
        assert (store.source[cand[i]] != i).all()
        # every other task's rows are reachable (uniform over the pooled other data)
        assert set(np.unique(store.source[cand[i]])) == {0, 1, 2} - {i}


def test_none_gives_own_transitions_with_stored_rewards():
    store = hand_built_store()
    batch, stats = make_batch(store, "none", np.random.default_rng(2), OWN, SHARED)
    assert list(batch.counts) == [OWN] * 3 and stats.shared.tolist() == [0, 0, 0]
    for i in range(3):
        rows = batch.obs[_rows(batch, i), 0].long().numpy()
        assert (store.source[rows] == i).all() and (batch.task_ids[_rows(batch, i)] == i).all()
        np.testing.assert_array_equal(batch.reward[_rows(batch, i)].numpy(), 1000.0 * i + rows)
        np.testing.assert_array_equal(batch.next_obs[_rows(batch, i)].numpy(), store.next_obs[rows])


def test_all_shares_every_candidate_with_relabelled_rewards():
    store = hand_built_store()
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    batch, stats = make_batch(store, "all", rng_a, OWN, SHARED)
    own, cand = sample_indices(rng_b, store.offsets, OWN, SHARED)  # the same draws
    assert list(batch.counts) == [OWN + SHARED] * 3 and stats.fraction.tolist() == [1.0, 1.0, 1.0]
    for i in range(3):
        rows = batch.obs[_rows(batch, i), 0].long().numpy()
        np.testing.assert_array_equal(rows, np.concatenate([own[i], cand[i]]))
        np.testing.assert_array_equal(batch.reward[_rows(batch, i)].numpy(), 1000.0 * i + rows)  # task i's reward
        np.testing.assert_array_equal(batch.action[_rows(batch, i)].numpy(), store.action[rows])


@pytest.mark.parametrize("mode", ["cds", "cds_zero"])
@pytest.mark.parametrize("percentile", [0, 30, 50, 90, 100])
def test_cds_shares_exactly_the_candidates_above_the_percentile(mode, percentile):
    store = hand_built_store()
    rng_a, rng_b = np.random.default_rng(4), np.random.default_rng(4)
    batch, stats = make_batch(store, mode, rng_a, OWN, SHARED, q_fn=hand_q, percentile=percentile)
    own, cand = sample_indices(rng_b, store.offsets, OWN, SHARED)
    for i in range(3):

        def q_np(rows, i=i):
            return store.obs[rows, 1].astype(np.float64) * (i + 1) + store.action[rows, 0]

        threshold = np.percentile(q_np(own[i]).astype(np.float32), percentile)
        expected = cand[i][q_np(cand[i]).astype(np.float32) >= threshold]
        rows = batch.obs[_rows(batch, i), 0].long().numpy()
        np.testing.assert_array_equal(rows, np.concatenate([own[i], expected]))
        assert stats.threshold[i] == pytest.approx(threshold, rel=1e-6)
        assert stats.shared[i] == len(expected) and stats.candidates[i] == SHARED
        shared_reward = batch.reward[_rows(batch, i)].numpy()[OWN:]
        want = np.zeros(len(expected)) if mode == "cds_zero" else 1000.0 * i + expected
        np.testing.assert_array_equal(shared_reward, want)
        np.testing.assert_array_equal(batch.reward[_rows(batch, i)].numpy()[:OWN], 1000.0 * i + own[i])
    assert 0 < stats.shared.sum() < 3 * SHARED or percentile in (0, 100)  # the filter does filter


def test_cds_filter_is_inclusive_at_the_threshold():
    keep, threshold = cds_filter(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), torch.tensor([2.9, 3.0, 3.1]), 50)
    assert threshold == 3.0 and keep.tolist() == [False, True, True]


def test_assemble_rejects_missing_relabelled_rewards():
    store = hand_built_store()
    store.rewards[0, 40] = np.nan
    with pytest.raises(RuntimeError, match="no relabelled reward"):
        assemble(store, "all", [np.array([0])] * 3, [np.array([40])] * 3)
    assemble(store, "cds_zero", [np.array([0])] * 3, [np.array([40])] * 3)  # reward 0 needs no relabelling


def test_unknown_mode_is_a_one_line_error():
    with pytest.raises(UserError, match=r"^sharing='cdz' is not allowed; use none, all, cds or cds_zero$"):
        check_mode("cdz")
