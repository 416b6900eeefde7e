"""Learning-progress curriculum on scripted success streams, its driver, and short real runs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtrl import curriculum
from mtrl.config import CurriculumConfig
from mtrl.curriculum.driver import CurriculumDriver
from mtrl.curriculum.learning_progress import reweight
from mtrl.errors import UserError
from mtrl.io import checkpoint
from mtrl.train.trainer import Trainer
from tests.conftest import smoke_run_config


def _feed(cur, streams, steps):
    for t in range(steps):
        for task, stream in enumerate(streams):
            cur.observe(task, stream(t))


def test_rising_task_beats_tasks_stuck_at_zero_and_one():
    cur = curriculum.make("learning_progress", 3)
    _feed(cur, [lambda t: 0.0, lambda t: 1.0, lambda t: float(t % 10 < t / 20)], 150)
    p = cur.probabilities()
    assert p[2] > p[0] and p[2] > p[1]


def test_forgetting_task_gains_probability():
    cur = curriculum.make("learning_progress", 3)
    _feed(cur, [lambda t: 1.0, lambda t: 1.0, lambda t: 1.0], 100)
    before = cur.probabilities()[2]
    _feed(cur, [lambda t: 1.0, lambda t: 1.0, lambda t: 0.0], 20)
    p = cur.probabilities()
    assert p[2] > before and p[2] > p[0] and p[2] > p[1]


def test_equal_progress_gives_uniform_sampling():
    cur = curriculum.make("learning_progress", 4)
    _feed(cur, [lambda t: float(t > 30)] * 4, 60)
    np.testing.assert_allclose(cur.probabilities(), 0.25)
    np.testing.assert_allclose(curriculum.make("uniform", 4).probabilities(), 0.25)


@given(
    st.lists(st.lists(st.sampled_from([0.0, 1.0]), min_size=5, max_size=5), min_size=1, max_size=60),
    st.floats(0.0, 0.2),
)
def test_probabilities_sum_to_one_and_respect_the_floor(stream, floor):
    cur = curriculum.make("learning_progress", 5, floor=floor)
    for row in stream:
        for task, success in enumerate(row):
            cur.observe(task, success)
    p = cur.probabilities()
    assert abs(p.sum() - 1.0) < 1e-9 and (p >= floor - 1e-12).all()


def test_reweighting_function():
    np.testing.assert_allclose(reweight(np.array([0.0, 0.5, 1.0]), 0.1), [0.0, 0.9, 1.0])
    assert reweight(np.array([0.1]), 0.1)[0] > 0.1  # stretches low success rates


@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=20), st.integers(1, 256))
def test_batch_counts_sum_to_batch_and_follow_probabilities(raw, per_task):
    k = len(raw)
    cur = curriculum.make("learning_progress", k)
    for task, value in enumerate(raw):
        for t in range(30):
            cur.observe(task, float(t * value > 10))
    driver = CurriculumDriver(cur, drives="replay")
    counts = driver.batch_counts(per_task, np.ones(k, dtype=np.int64))
    assert counts.sum() == per_task * k
    assert np.all(np.abs(counts - per_task * k * cur.probabilities()) < 1.0 + 1e-9)


def test_state_round_trip():
    cur = curriculum.make("learning_progress", 3)
    _feed(cur, [lambda t: float(t > 5), lambda t: 0.0, lambda t: 1.0], 20)
    clone = curriculum.make("learning_progress", 3)
    clone.load_state_dict(cur.state_dict())
    np.testing.assert_array_equal(clone.probabilities(), cur.probabilities())


def test_bad_options():
    with pytest.raises(UserError, match="unknown curriculum 'lp'"):
        curriculum.make("lp", 3)
    with pytest.raises(UserError, match="curriculum.floor=0.5"):
        curriculum.make("learning_progress", 3, floor=0.5)
    with pytest.raises(UserError, match="curriculum.drives='envs'"):
        CurriculumConfig("uniform", drives="envs")


@pytest.mark.parametrize("drives,extra", [("replay", []), ("env", ["env.slots=1"])])
def test_real_run_logs_probabilities_and_checkpoints_state(tmp_path, drives, extra):
    run_dir = tmp_path / drives
    Trainer(
        smoke_run_config(
            run_dir,
            "curriculum=learning_progress",
            f"curriculum.drives={drives}",
            "total_steps=450",
            "log_every=150",
            *extra,
        ),
        run_dir,
    ).run()
    tags = EventAccumulator(str(run_dir / "tb")).Reload().Tags()["scalars"]
    assert "curriculum/probability/reach-v3" in tags and "curriculum/progress/drawer-close-v3" in tags
    _, state = checkpoint.load(run_dir)
    assert set(state["curriculum"]) == {"p_fast", "p_slow", "seen"}
    assert state["curriculum"]["seen"].any()
