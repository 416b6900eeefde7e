"""Observation standardisation of offline agents: the statistics, where they apply (acting, updates, the Q
used by data sharing), checkpoints, and the offline trainer's `offline.normalize_obs`."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mtrl.agents.cql import CQLAgent, CQLConfig
from mtrl.agents.factory import load_policy
from mtrl.agents.obs_norm import ObsNormalizer
from mtrl.batch import Batch
from mtrl.data.dataset import load_dataset
from mtrl.errors import UserError
from mtrl.io import checkpoint
from mtrl.train.offline_trainer import OfflineTrainer
from tests.conftest import collect_smoke_data, smoke_run_config

K, OBS, ACT = 2, 6, 3
finite = st.floats(-50, 50, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(3, 40), st.just(OBS)), elements=finite), st.integers(0, OBS - 1))
def test_normalized_data_has_zero_mean_and_unit_spread_except_constant_dimensions(data, constant):
    data[:, constant] = 0.25  # a dimension the data never varies: only shifted
    norm = ObsNormalizer.from_arrays([data[:2], data[2:]])  # two tasks' rows are pooled
    out = norm(torch.as_tensor(data)).double().numpy()
    spread = data.astype(np.float64).std(axis=0)
    varying = spread > 1e-3
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(out.std(axis=0)[varying], 1.0, rtol=1e-3)
    assert norm.std[constant] == 1.0 and np.all(out[:, constant] == 0.0)


def test_state_round_trip_and_mismatched_statistics_are_one_line_errors():
    norm = ObsNormalizer.from_arrays([np.random.default_rng(0).normal(size=(10, OBS))])
    back = ObsNormalizer.from_state(norm.state_dict(), OBS, "cpu")
    assert torch.equal(back.mean, norm.mean) and torch.equal(back.std, norm.std)
    with pytest.raises(UserError) as err:
        ObsNormalizer.from_state(norm.state_dict(), OBS + 1, "cpu")
    assert "this agent needs (7,)" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError):
        ObsNormalizer.from_state({"mean": norm.mean, "std": torch.zeros(OBS)}, OBS, "cpu")


def _agent() -> CQLAgent:
    torch.manual_seed(0)
    config = CQLConfig(hidden_sizes=[32, 32], cql_num_actions=3)
    return CQLAgent(OBS, ACT, ["a", "b"], config, {"name": "onehot"}, torch.device("cpu"))


def _batch() -> Batch:
    g = torch.Generator().manual_seed(1)
    n = 8
    return Batch(
        obs=torch.randn(n, OBS, generator=g) * 0.1 + 0.7,
        action=torch.rand(n, ACT, generator=g) * 2 - 1,
        reward=torch.rand(n, generator=g),
        next_obs=torch.randn(n, OBS, generator=g) * 0.1 + 0.7,
        terminated=torch.zeros(n),
        task_ids=torch.repeat_interleave(torch.arange(K), 4),
        counts=(4, 4),
    )


def test_agent_sees_standardised_observations_when_acting_updating_and_in_task_q():
    """An agent with statistics on raw data behaves exactly as the same agent without them on standardised data."""
    batch = _batch()
    norm = ObsNormalizer.from_arrays([batch.obs.numpy()])
    with_stats, raw = _agent(), _agent()
    with_stats.set_obs_normalizer(norm)
    standardised = copy.copy(batch)
    standardised.obs, standardised.next_obs = norm(batch.obs), norm(batch.next_obs)
    ids = batch.task_ids.numpy()
    np.testing.assert_array_equal(
        with_stats.act(batch.obs.numpy(), ids, deterministic=True),
        raw.act(standardised.obs.numpy(), ids, deterministic=True),
    )
    assert torch.equal(
        with_stats.task_q(batch.obs, batch.action, batch.task_ids),
        raw.task_q(standardised.obs, batch.action, batch.task_ids),
    )
    for _ in range(3):
        torch.manual_seed(5)
        with_stats.update(batch)
        torch.manual_seed(5)
        raw.update(standardised)
    for p, q in zip(with_stats.actor.parameters(), raw.actor.parameters()):
        torch.testing.assert_close(p, q)


def test_statistics_travel_with_the_agent_state():
    agent = _agent()
    agent.set_obs_normalizer(ObsNormalizer.from_arrays([_batch().obs.numpy()]))
    fresh = _agent()
    fresh.load_state_dict(agent.state_dict(), networks_only=True)
    assert torch.equal(fresh.obs_normalizer.mean, agent.obs_normalizer.mean)
    plain = _agent()
    fresh.load_state_dict(plain.state_dict())  # a checkpoint without statistics: raw observations
    assert fresh.obs_normalizer is None


@pytest.mark.parametrize("normalize", [True, False])
def test_offline_runs_standardise_with_the_dataset_statistics_by_default(tmp_path, normalize):
    data = collect_smoke_data(tmp_path / "expert.h5")
    run_dir = tmp_path / "run"
    overrides = ["mode=offline", f"dataset={data}", "env.horizon=20", "total_steps=2", "eval_every=0"]
    config = smoke_run_config(run_dir, *overrides, f"offline.normalize_obs={str(normalize).lower()}")
    OfflineTrainer(config, run_dir).run()
    loaded = load_policy(run_dir, "cpu")
    saved = checkpoint.load(run_dir)[1]["agent"]
    if not normalize:
        assert loaded.policy.obs_normalizer is None and "obs_normalizer" not in saved
        return
    dataset = load_dataset(data, with_state=False)
    pooled = np.concatenate([dataset.tasks[name].obs for name in dataset.task_names]).astype(np.float64)
    np.testing.assert_allclose(loaded.policy.obs_normalizer.mean.numpy(), pooled.mean(axis=0), rtol=1e-5, atol=1e-6)
