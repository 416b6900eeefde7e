"""Async vectorisation (worker pool) and env copies per task, on real Meta-World envs."""

from __future__ import annotations

import os
import signal
import threading
import time
from functools import partial

import gymnasium as gym
import numpy as np
import pytest

from envs import build_env_spec
from envs.single import make_task_env
from envs.vector import COPY_SEED_STRIDE, MultiTaskVectorEnv
from envs.workers import WorkerError, resolve_vectorization
from mtrl.errors import UserError

TASKS = ["reach-v3", "drawer-close-v3"]
HORIZON = 20


def _spec(**options):
    """Two tasks under the metaworld protocol (a random goal per episode) with 20-step episodes."""
    return build_env_spec({"tasks": TASKS, "protocol": "metaworld", "horizon": HORIZON, **options}, seed=0)


def _actions(env, steps: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (steps, env.num_envs, env.act_dim)).astype(np.float32)


def _rollout(env, actions, split: bool = False):
    """Reset with seed 7, then step through `actions` (with step_async/step_wait when `split`)."""
    first = env.reset(seed=7)
    steps = []
    for a in actions:
        if split:
            env.step_async(a)
            steps.append(env.step_wait())
        else:
            steps.append(env.step(a))
    return first, steps


def _assert_same_steps(a, b) -> None:
    first_a, steps_a = a
    first_b, steps_b = b
    np.testing.assert_array_equal(first_a, first_b)
    for x, y in zip(steps_a, steps_b, strict=True):
        for name in ("obs", "next_obs", "reward", "raw_reward", "terminated", "truncated", "success", "task_ids"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=name)
        assert x.episodes == y.episodes


def test_copies_match_separately_seeded_single_envs():
    spec = _spec(envs_per_task=2, vectorization="async", workers=2)
    env = spec.make(seed=3)
    try:
        assert (env.vectorization, env.workers, env.num_envs) == ("async", 2, 4)
        assert env.task_ids.tolist() == [0, 1, 0, 1]  # slot s = copy * K + task
        actions = _actions(env, 2 * HORIZON + 5)
        first, steps = _rollout(env, actions)
    finally:
        env.close()
    ended = 0
    for slot in range(4):
        copy, task = divmod(slot, len(TASKS))
        offset = task + COPY_SEED_STRIDE * copy  # the documented seeds: env seed + offset, reset seed + offset
        single = make_task_env(TASKS[task], spec.goals[TASKS[task]], "random", HORIZON, 3 + offset)
        obs, _ = single.reset(seed=7 + offset)
        np.testing.assert_array_equal(first[slot], obs.astype(np.float32))
        for a, step in zip(actions, steps):
            obs, reward, terminated, truncated, info = single.step(a[slot])
            np.testing.assert_array_equal(step.next_obs[slot], obs.astype(np.float32))
            assert step.raw_reward[slot] == reward and step.reward[slot] == np.float32(reward)  # metaworld: no scaling
            assert step.success[slot] == (info["success"] > 0.5) and step.truncated[slot] == truncated
            if truncated:
                ended += 1
                obs, _ = single.reset()
            np.testing.assert_array_equal(step.obs[slot], obs.astype(np.float32))
        single.close()
    assert ended == 8  # two episode ends per slot were checked
    # The two copies of a task are different episodes (their own seeds and goal sequences).
    assert not np.array_equal(steps[-1].obs[0], steps[-1].obs[2])


def test_async_and_sync_give_identical_steps_and_normaliser_state():
    """Same seeds and actions: identical StepResults and episodes, step_async/step_wait == step; 3 workers
    over 4 envs gives uneven slices. Reward normalisation is on, so its per-copy state is compared too."""
    runs, states = [], []
    for vectorization, workers, split in (("sync", "auto", False), ("async", 3, True), ("async", 3, False)):
        env = _spec(envs_per_task=2, vectorization=vectorization, workers=workers, reward_normalization=True).make(3)
        try:
            runs.append(_rollout(env, _actions(env, 2 * HORIZON + 5), split))
            states.append(env.normalizer_state())
        finally:
            env.close()
    assert sum(len(step.episodes) for step in runs[0][1]) == 8
    for run, state in zip(runs[1:], states[1:]):
        _assert_same_steps(runs[0], run)
        assert state == states[0]
    assert [list(s) for s in states[0]] == [[0], [1], [0], [1]]  # one statistic per copy, keyed by its task


def test_normaliser_state_round_trips_through_workers():
    spec = _spec(vectorization="async", workers=2, reward_normalization=True)
    trained, fresh = spec.make(seed=1), spec.make(seed=1)
    try:
        _rollout(trained, _actions(trained, 30))
        fresh.load_normalizer_state(trained.normalizer_state())
        assert fresh.normalizer_state() == trained.normalizer_state()
        # From the same reset, both envs now scale the same rewards identically.
        actions = _actions(trained, 10, seed=1)
        _assert_same_steps(_rollout(trained, actions), _rollout(fresh, actions))
    finally:
        trained.close()
        fresh.close()


def test_close_stops_the_workers():
    env = _spec(vectorization="async", workers=2).make(seed=0)
    processes = [worker.process for worker in env.vector_env.workers]
    assert len(processes) == 2 and all(p.is_alive() for p in processes)
    env.reset(seed=0)
    env.step_async(env.random_actions())  # closing with a step in flight still ends cleanly
    env.close()
    assert [p.exitcode for p in processes] == [0, 0]
    env.close()  # idempotent
    with pytest.raises(WorkerError, match="closed"):
        env.step(env.random_actions())


def test_a_dead_worker_gives_a_clear_error():
    env = _spec(vectorization="async", workers=2).make(seed=0)
    try:
        env.reset(seed=0)
        victim = env.vector_env.workers[1].process
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)
        with pytest.raises(WorkerError, match=r"^env worker 1 \(pid \d+, env 1\) died \(killed by signal 9\)"):
            env.step(env.random_actions())
        assert not any(worker.process.is_alive() for worker in env.vector_env.workers)
    finally:
        env.close()


def test_an_exception_in_a_worker_names_the_worker():
    env = _spec(vectorization="async", workers=2).make(seed=0)
    try:
        with pytest.raises(WorkerError, match=r"^env worker 0 \(pid \d+, env 0\) raised AttributeError"):
            env.call("no_such_method")
        assert not any(worker.process.is_alive() for worker in env.vector_env.workers)
    finally:
        env.close()


class _Pausing(gym.Wrapper):
    """A real task env with a `pause` method, to keep a worker busy."""

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)


def _pausing_env(goals) -> gym.Env:
    return _Pausing(make_task_env("reach-v3", goals, "fixed", HORIZON, 0))


def test_keyboard_interrupt_while_waiting_kills_the_workers():
    fns = [partial(_pausing_env, _spec().goals["reach-v3"])] * 2
    env = MultiTaskVectorEnv(["reach-v3"], fns, _spec().protocol, seed=0, vectorization="async", workers=2)
    processes = [worker.process for worker in env.vector_env.workers]
    # Python's own Ctrl-C handler, also where the tests were started in the background (SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt = threading.Timer(1.0, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    interrupt.start()
    started = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            env.call("pause", 60.0)
    finally:
        interrupt.cancel()
        signal.signal(signal.SIGINT, previous)
        env.close()
    assert time.perf_counter() - started < 30
    assert not any(p.is_alive() for p in processes)


@pytest.mark.parametrize(
    "vectorization,workers,cores,num_envs,expected",
    [
        ("auto", "auto", 2, 10, ("sync", 0)),  # the learner and one more core: stay in process
        ("auto", "auto", 3, 10, ("async", 2)),
        ("auto", "auto", 16, 4, ("async", 4)),  # never more workers than envs
        ("auto", 3, 1, 10, ("async", 3)),  # asking for workers means async
        ("async", "auto", 1, 10, ("async", 1)),
        ("sync", "auto", 64, 10, ("sync", 0)),
    ],
)
def test_vectorization_rule(vectorization, workers, cores, num_envs, expected):
    assert resolve_vectorization(vectorization, workers, num_envs, cores=cores) == expected


@pytest.mark.parametrize(
    "options,message",
    [
        (
            {"vectorization": "sync", "workers": 2},
            "env.workers=2 is not allowed; expected auto with env.vectorization=sync",
        ),
        ({"workers": 0}, "env.workers=0 is not allowed; expected an integer >= 1"),
        ({"vectorization": "fork"}, "env.vectorization='fork' is not allowed; expected one of auto, sync, async"),
        ({"envs_per_task": 0}, "env.envs_per_task=0 is not allowed"),
        ({"envs_per_task": 2, "slots": 1}, "env.envs_per_task=2 is not allowed; expected 1 when env.slots is set"),
        ({"reward_normalization": "yes"}, "env.reward_normalization='yes' is not allowed; expected true or false"),
        ({"worker": 2}, "unknown option env.worker (did you mean env.workers?)"),
    ],
)
def test_env_option_errors(options, message):
    with pytest.raises(UserError) as error:
        _spec(**options)
    assert message in str(error.value) and "\n" not in str(error.value)
