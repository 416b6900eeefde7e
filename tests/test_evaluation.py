"""Evaluation: episodes that stop at their first success, progress, wall time and output files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from envs import build_env_spec
from envs.scripted import ScriptedPolicy
from mtrl.eval.evaluation import EvalResult, TaskResult, evaluate

# Meta-World's scripted experts reach success on these tasks after about 35-75 steps depending on the goal,
# so a 62-step horizon makes success depend on the goal (reach-v3 5/5, push-v3 2/5 at goal seed 0).
TASKS = ["reach-v3", "push-v3"]
HORIZON = 62
EPISODES = 5


def _env(vectorization: str = "sync", **options):
    spec = build_env_spec(
        {"tasks": TASKS, "protocol": "metaworld", "horizon": HORIZON, "vectorization": vectorization, **options}, seed=0
    )
    return spec.make(seed=0, evaluation=True)


def test_stopping_at_first_success_keeps_success_rates_with_fewer_steps():
    policy = ScriptedPolicy(TASKS).act
    env = _env()
    try:
        full = evaluate(policy, env, EPISODES, seed=0, returns=True, progress=False)
        early = evaluate(policy, env, EPISODES, seed=0, progress=False)  # same env again: goals restart at 0
    finally:
        env.close()
    rates = [t.success_rate for t in full.tasks]
    assert any(0 < r < 1 for r in rates), rates  # success depends on the goal: the goal cycle matters
    assert [t.success_rate for t in early.tasks] == rates
    assert full.env_steps == len(TASKS) * EPISODES * HORIZON
    assert early.env_steps < full.env_steps
    assert all(t.mean_return is not None for t in full.tasks)
    assert all(t.mean_return is None and t.episodes == EPISODES for t in early.tasks)
    assert full.seconds > 0 and early.seconds > 0


def test_stopping_at_first_success_in_worker_processes():
    """Async envs end episodes at success the same way (the env group in each worker does it)."""
    policy = ScriptedPolicy(TASKS).act
    sync_env, async_env = _env(), _env("async", workers=2)
    try:
        expected = evaluate(policy, sync_env, 3, seed=0, progress=False)
        got = evaluate(policy, async_env, 3, seed=0, progress=False)
    finally:
        sync_env.close()
        async_env.close()
    assert got.tasks == expected.tasks and got.env_steps == expected.env_steps


def test_progress_bar_goes_to_stderr_only_when_asked(capsys):
    env = _env(horizon=5)
    policy = ScriptedPolicy(TASKS).act
    try:
        evaluate(policy, env, 2, seed=0, progress=False)
        quiet = capsys.readouterr()
        evaluate(policy, env, 2, seed=0, progress=True)
        shown = capsys.readouterr()
    finally:
        env.close()
    assert quiet.err == "" and quiet.out == ""
    assert "eval" in shown.err and "/4" in shown.err and shown.out == ""


def test_results_without_returns_write_and_print(tmp_path):
    result = EvalResult(
        "metaworld",
        3,
        [TaskResult("reach-v3", 1.0, None, 5), TaskResult("push-v3", 0.4, 12.5, 5)],
        seconds=1.25,
        env_steps=321,
    )
    json_path, csv_path = result.write(tmp_path / "eval.json")
    data = json.loads(json_path.read_text())
    assert data["seconds"] == 1.25 and data["env_steps"] == 321
    assert [t["mean_return"] for t in data["tasks"]] == [None, 12.5]
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["mean_return"] for r in rows] == ["", "12.5"]
    lines = result.table().splitlines()
    assert lines[1].split()[2] == "-" and lines[2].split()[2] == "12.50"
    assert "321 env steps in 1.2 s" in lines[-1]


def test_evaluate_refuses_a_training_env_with_copies():
    spec = build_env_spec(
        {"tasks": TASKS, "protocol": "mtrl", "horizon": 5, "vectorization": "sync", "envs_per_task": 2}, seed=0
    )
    env = spec.make(seed=0)
    try:
        with pytest.raises(ValueError, match="one env slot per task"):
            evaluate(lambda obs, tasks: np.zeros((len(obs), 4), np.float32), env, 1, seed=0, progress=False)
    finally:
        env.close()
