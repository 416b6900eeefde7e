"""Environment construction and the Meta-World bookkeeping traps, on real envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs import build_env_spec, get_protocol, resolve_tasks
from envs.normalization import RewardScale
from envs.scripted import ScriptedPolicy
from envs.single import make_task_env
from envs.tasks import MT10_TASKS, MT50_TASKS
from envs.vector import MultiTaskVectorEnv
from mtrl.errors import UserError
from mtrl.eval.evaluation import evaluate


# MT50 takes about a minute to build (Meta-World compiles 50 MuJoCo models), so it runs with the slow tests.
@pytest.mark.parametrize("name,count", [("mt10", 10), pytest.param("mt50", 50, marks=pytest.mark.slow)])
def test_benchmark_construction(name, count):
    spec = build_env_spec({"tasks": name, "protocol": "mtrl"}, seed=0)
    assert len(spec.task_names) == count == len(set(spec.task_names))
    assert spec.task_names == list(MT10_TASKS if count == 10 else MT50_TASKS)
    env = spec.make(seed=0)
    try:
        obs = env.reset(seed=0)
        assert obs.shape == (count, 39) and obs.dtype == np.float32
        assert env.task_ids.tolist() == list(range(count))
        step = env.step(env.random_actions())
        assert step.obs.shape == (count, 39) and step.reward.shape == (count,)
    finally:
        env.close()


def test_task_resolution_and_errors():
    assert resolve_tasks("mt1-reach-v3") == ("mt1-reach-v3", ["reach-v3"])
    assert resolve_tasks(["reach", "push-v3"]) == ("custom", ["reach-v3", "push-v3"])
    with pytest.raises(UserError, match="unknown Meta-World task 'reech-v3'.*reach-v3"):
        resolve_tasks(["reech-v3"])
    with pytest.raises(UserError, match="unknown benchmark 'mt11'"):
        resolve_tasks("mt11")
    with pytest.raises(UserError, match="repeats reach-v3"):
        resolve_tasks(["reach-v3", "reach-v3"])
    with pytest.raises(UserError, match="unknown protocol 'foo'; choose one of: metaworld, mtrl"):
        get_protocol("foo")
    with pytest.raises(UserError, match="env.horizon=900"):
        get_protocol("mtrl", 900)


def test_protocols_differ_in_goals_and_horizon(two_task_spec):
    assert get_protocol("metaworld").horizon == 500 and get_protocol("mtrl").horizon == 150
    assert all(len(g) == 50 for g in two_task_spec.goals.values())
    env = two_task_spec.make(seed=0)
    try:
        first = env.reset(seed=0)
        for _ in range(150):
            step = env.step(env.random_actions())
        # Horizon reached: truncation, never termination; the fixed goal gives the same start again.
        assert step.truncated.all() and not step.terminated.any()
        assert [e.length for e in step.episodes] == [150, 150]
        np.testing.assert_allclose(step.obs, first)
        # The true final observation is the transition's next_obs, not the reset observation.
        assert not np.allclose(step.next_obs, step.obs)
    finally:
        env.close()


class _ScriptedSuccessFlag(gym.Wrapper):
    """Replaces the env's success flag by a scripted sequence (to check how episodes aggregate it)."""

    def __init__(self, env, flags):
        super().__init__(env)
        self.flags, self.t = flags, 0

    def reset(self, **kwargs):
        self.t = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["success"] = float(self.flags[self.t])
        self.t += 1
        return obs, reward, terminated, truncated, info


def test_episode_success_is_max_of_flag(two_task_spec):
    protocol = get_protocol("mtrl", horizon=4)
    goals = two_task_spec.goals["reach-v3"][:1]
    flags = {0: [0, 1, 0, 0], 1: [0, 0, 0, 0]}
    fns = [lambda i=i: _ScriptedSuccessFlag(make_task_env("reach-v3", goals, "fixed", 4, i), flags[i]) for i in (0, 1)]
    env = MultiTaskVectorEnv(["reach-v3", "reach-v3"], fns, protocol, seed=0)
    try:
        env.reset(seed=0)
        per_step = [env.step(env.random_actions()) for _ in range(4)]
        assert [s.success.tolist() for s in per_step] == [[0, 0], [1, 0], [0, 0], [0, 0]]
        assert [e.success for e in per_step[-1].episodes] == [True, False]
    finally:
        env.close()


def test_metaworld_protocol_cycles_goals_in_evaluation():
    spec = build_env_spec(
        {"tasks": ["reach-v3"], "protocol": "metaworld", "horizon": 2, "vectorization": "sync"}, seed=0
    )
    env = spec.make(seed=0, evaluation=True)
    try:
        env.restart_goal_cycle()
        env.reset(seed=0)
        goals = []
        for _ in range(6):
            env.step(env.random_actions())
            goals.append(env.vector_env.envs[0].unwrapped._last_rand_vec.copy())
        # 2-step episodes: goal 0, 0, then goal 1, 1, then goal 2, 2.
        expected = [spec.goals["reach-v3"][i] for i in (0, 1, 2)]
        import pickle

        vecs = [pickle.loads(g.data)["rand_vec"] for g in expected]
        np.testing.assert_allclose(goals[0], vecs[0])
        np.testing.assert_allclose(goals[2], vecs[1])
        np.testing.assert_allclose(goals[4], vecs[2])
    finally:
        env.close()


def test_seeded_envs_are_reproducible(two_task_spec):
    def rollout():
        env = two_task_spec.make(seed=3)
        try:
            obs = [env.reset(seed=3)]
            obs += [env.step(env.random_actions()).obs for _ in range(20)]
            return np.stack(obs)
        finally:
            env.close()

    np.testing.assert_array_equal(rollout(), rollout())


def test_scripted_policy_reads_raw_observation(two_task_spec):
    env = two_task_spec.make(seed=0)
    try:
        obs = env.reset(seed=0)
        policy = ScriptedPolicy(two_task_spec.task_names)
        with_onehot = np.concatenate([obs, np.eye(2, dtype=np.float32)], axis=1)
        np.testing.assert_array_equal(policy.act(obs, env.task_ids), policy.act(with_onehot, env.task_ids))
    finally:
        env.close()


def test_scripted_experts_succeed():
    tasks = ["reach-v3", "drawer-close-v3", "button-press-topdown-v3", "window-open-v3"]
    spec = build_env_spec({"tasks": tasks, "protocol": "metaworld"}, seed=0)
    env = spec.make(seed=0, evaluation=True)
    try:
        result = evaluate(ScriptedPolicy(tasks).act, env, episodes_per_task=3, seed=0)
    finally:
        env.close()
    assert [t.task for t in result.tasks] == tasks
    assert all(t.episodes == 3 for t in result.tasks)
    assert result.mean_success >= 0.9, result.table()


def _authors_reward_statistic(rewards, alpha=0.001):
    """NormalizedEnvWrapper's reward path (facebookresearch/mtenv normalized_env.py), written out with numpy."""
    mean, var, scaled = 0.0, 1.0, []
    for r in rewards:
        mean = (1 - alpha) * mean + alpha * r
        var = (1 - alpha) * var + alpha * np.square(r - mean)
        scaled.append(r / (np.sqrt(var) + 1e-8))
    return scaled, mean, var


def test_reward_scale_by_hand():
    scale = RewardScale()
    # r = 1: mean = 0.001, var = 0.999 + 0.001 * 0.999^2 = 0.999998001, r / (sqrt(var) + 1e-8)
    assert scale(1.0) == pytest.approx(1.0 / (0.999998001**0.5 + 1e-8), rel=1e-15)
    assert (scale.mean, scale.var) == pytest.approx((0.001, 0.999998001), rel=1e-15)
    # r = 2: mean = 0.999 * 0.001 + 0.002 = 0.002999, var = 0.999 * 0.999998001 + 0.001 * (2 - 0.002999)^2
    var = 0.999 * 0.999998001 + 0.001 * (2 - 0.002999) ** 2
    assert scale(2.0) == pytest.approx(2.0 / (var**0.5 + 1e-8), rel=1e-15)
    assert scale.mean == pytest.approx(0.002999, rel=1e-15)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=300))
def test_reward_scale_matches_the_authors_formula(rewards):
    scale = RewardScale()
    ours = [scale(r) for r in rewards]
    theirs, mean, var = _authors_reward_statistic(rewards)
    assert ours == theirs and (scale.mean, scale.var) == (mean, var)  # bit for bit


def test_reward_normalisation_defaults_follow_the_protocol():
    tasks = ["reach-v3"]
    assert build_env_spec({"tasks": tasks, "protocol": "mtrl"}, seed=0).reward_normalization is True
    assert build_env_spec({"tasks": tasks, "protocol": "metaworld"}, seed=0).reward_normalization is False
    spec = build_env_spec({"tasks": tasks, "protocol": "metaworld", "reward_normalization": True}, seed=0)
    assert spec.reward_normalization is True and spec.describe()["reward_normalization"] is True


def test_normalised_training_rewards_raw_returns_and_state(two_task_spec):
    """mtrl protocol: the replay reward is the normalised one, episode returns and success stay raw; the
    normaliser's state restores into a fresh env. Evaluation envs never normalise."""
    assert two_task_spec.reward_normalization
    horizon = 20
    spec = build_env_spec(
        {"tasks": two_task_spec.task_names, "protocol": "mtrl", "horizon": horizon, "vectorization": "sync"}, seed=0
    )
    raw_spec = build_env_spec(
        {
            "tasks": two_task_spec.task_names,
            "protocol": "mtrl",
            "horizon": horizon,
            "vectorization": "sync",
            "reward_normalization": False,
        },
        seed=0,
    )
    env, raw_env, fresh = spec.make(seed=0), raw_spec.make(seed=0), spec.make(seed=0)
    evaluation = spec.make(seed=0, evaluation=True)
    one_task = build_env_spec({"tasks": ["reach-v3"], "protocol": "mtrl", "vectorization": "sync"}, seed=0).make(0)
    try:
        assert evaluation.normalizer_state() is None and raw_env.normalizer_state() is None
        env.reset(seed=0)
        raw_env.reset(seed=0)
        rewards, returns = [[], []], [[], []]
        for _ in range(2 * horizon):
            actions = env.random_actions()
            step, raw = env.step(actions), raw_env.step(actions)
            for name in ("obs", "next_obs", "raw_reward", "success", "truncated"):
                np.testing.assert_array_equal(getattr(step, name), getattr(raw, name), err_msg=name)
            assert step.episodes == raw.episodes  # returns and success come from raw rewards
            np.testing.assert_array_equal(raw.reward, raw.raw_reward.astype(np.float32))
            for slot in (0, 1):
                rewards[slot].append(float(step.raw_reward[slot]))
            for episode in step.episodes:
                returns[episode.task_id].append(episode.ret)
        for slot in (0, 1):
            assert returns[slot] == pytest.approx([sum(rewards[slot][:horizon]), sum(rewards[slot][horizon:])])
        # The training reward is the authors' statistic over each slot's raw reward stream.
        scaled = [_authors_reward_statistic(rewards[slot])[0][-1] for slot in (0, 1)]
        np.testing.assert_array_equal(step.reward, np.float32(scaled))
        assert not np.allclose(step.reward, step.raw_reward)
        fresh.load_normalizer_state(env.normalizer_state())
        assert fresh.normalizer_state() == env.normalizer_state()
        with pytest.raises(UserError, match="reward normaliser has 2 env slots; this env has 1"):
            one_task.load_normalizer_state(env.normalizer_state())
    finally:
        for e in (env, raw_env, fresh, evaluation, one_task):
            e.close()
