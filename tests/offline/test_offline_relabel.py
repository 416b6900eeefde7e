"""Relabelled rewards equal the Meta-World environment's reward for the target task."""

from __future__ import annotations

import numpy as np
import pytest

from envs import build_env_spec
from envs.relabel import ARM_JOINTS, RewardRelabeller, arm_indices
from envs.scripted import ScriptedPolicy
from mtrl.data.collect import TaskPlan, collect_task
from mtrl.data.dataset import load_dataset, write_dataset
from mtrl.data.offline import relabel_dataset

HORIZON = 40


@pytest.fixture(scope="module")
def spec():
    return build_env_spec(
        {"tasks": ["reach-v3", "push-v3", "drawer-close-v3"], "protocol": "mtrl", "horizon": HORIZON}, seed=0
    )


def _expert(task):
    policy = ScriptedPolicy([task])
    return lambda obs: policy.act(obs[None], np.zeros(1, np.int64))[0]


def _replay(actions):
    """A policy that plays a fixed action sequence (the same in every scene)."""
    it = iter(actions)
    return lambda obs: next(it)


@pytest.mark.parametrize("task", ["reach-v3", "push-v3", "drawer-close-v3"])
def test_own_task_relabelling_reproduces_the_environment_reward(spec, task):
    # Noisy expert data; push-v3's reward also reads contacts from the simulator (touching_main_object).
    data = collect_task(spec, TaskPlan(task, 2, 0.3, 0.1), _expert(task), seed=5, task_index=0)
    relabeller = RewardRelabeller(task, data.goals)
    try:
        rewards = relabeller.rewards(data)
    finally:
        relabeller.close()
    assert rewards.dtype == np.float32 and rewards.shape == data.reward.shape
    # Exact up to the float32 rounding of the stored observation.
    np.testing.assert_allclose(rewards, data.reward, rtol=1e-5, atol=1e-5)
    assert data.reward.std() > 0


def test_shared_transitions_get_the_target_tasks_environment_reward(spec):
    """The arm moves in free air with the same actions in push-v3's and reach-v3's scenes: reach-v3's reward of
    the push-v3 transitions, computed by relabelling, equals what reach-v3's own environment returned."""
    rng = np.random.default_rng(0)
    actions = np.column_stack(
        [rng.uniform(-0.3, 0.3, (HORIZON, 2)), rng.uniform(0.2, 1.0, (HORIZON, 1)), rng.uniform(-1, 1, (HORIZON, 1))]
    ).astype(np.float32)
    push = collect_task(spec, TaskPlan("push-v3", 1, 0.0, 0.0), _replay(actions), seed=1, task_index=1)
    reach = collect_task(spec, TaskPlan("reach-v3", 1, 0.0, 0.0), _replay(actions), seed=1, task_index=0)
    q_push, q_reach = push.qpos[:, push.arm_qpos_index], reach.qpos[:, reach.arm_qpos_index]
    np.testing.assert_allclose(q_push, q_reach, atol=1e-9)  # the robot did the same thing in both scenes
    relabeller = RewardRelabeller("reach-v3", reach.goals)
    try:
        relabelled = relabeller.rewards(push)
    finally:
        relabeller.close()
    assert not np.allclose(push.reward, reach.reward)  # the tasks' own rewards differ...
    np.testing.assert_allclose(relabelled, reach.reward, rtol=1e-5, atol=1e-5)  # ...task i's reward is recovered


def test_arm_joints_are_found_by_name_in_every_scene():
    import metaworld

    for task in ("reach-v3", "coffee-push-v3", "door-open-v3"):
        env = metaworld.ALL_V3_ENVIRONMENTS[task]()
        qpos, qvel = arm_indices(env.model)
        assert [env.model.joint(int(np.flatnonzero(env.model.jnt_qposadr == a)[0])).name for a in qpos] == list(
            ARM_JOINTS
        )
        assert len(qvel) == 9
        env.close()


def test_dataset_relabelling_covers_every_task_pair(spec, tmp_path):
    tasks = [
        collect_task(spec, TaskPlan(t, 1, 0.5, 0.2), _expert(t), seed=2, task_index=i)
        for i, t in enumerate(spec.task_names)
    ]
    meta = dict(
        benchmark=spec.benchmark,
        task_names=spec.task_names,
        protocol=spec.protocol.to_dict(),
        goal_seed=spec.goal_seed,
        obs_dim=39,
        act_dim=4,
        collection={},
    )
    dataset = load_dataset(write_dataset(tmp_path / "d.h5", meta, tasks))
    relabelled = relabel_dataset(dataset, progress=False)
    assert sorted(relabelled) == [(i, j) for i in range(3) for j in range(3) if i != j]
    for (_, j), rewards in relabelled.items():
        assert rewards.shape == (len(dataset.tasks[spec.task_names[j]]),) and np.isfinite(rewards).all()
        assert (rewards >= 0).all() and (rewards <= 10).all()  # Meta-World v3 rewards lie in [0, 10]
