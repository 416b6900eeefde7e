"""The best checkpoint of offline runs: chosen by mean evaluation success, ties by mean return (then the earlier
evaluation); kept across resumes; `evaluate.py which=best`; the report's best/final for offline runs; and the
offline agent options' one-line errors."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtrl.agents.factory import load_policy
from mtrl.errors import UserError
from mtrl.eval.evaluation import EvalResult, TaskResult
from mtrl.io import checkpoint
from mtrl.report import load_run, summarize, write_report
from mtrl.report.runs import Run
from mtrl.report.stats import best_evaluation
from mtrl.train.offline_trainer import OfflineTrainer
from tests.conftest import assert_one_line_error, collect_smoke_data, run_cli, smoke_run_config

TASKS = ["reach-v3", "drawer-close-v3"]  # the smoke experiment's tasks


@pytest.fixture(scope="module")
def expert_data(tmp_path_factory):
    """Scripted-expert data of both smoke tasks, 20-step episodes, mtrl protocol."""
    return collect_smoke_data(tmp_path_factory.mktemp("data") / "expert.h5")


def offline_trainer(run_dir, dataset, *extra: str) -> OfflineTrainer:
    return OfflineTrainer(
        smoke_run_config(run_dir, "mode=offline", f"dataset={dataset}", "env.horizon=20", "log_every=5", *extra),
        run_dir,
    )


def result(success: list[float], returns: list[float | None]) -> EvalResult:
    return EvalResult("mtrl", 0, [TaskResult(t, s, r, 1) for t, s, r in zip(TASKS, success, returns)])


def expected_best(scores: list[tuple[float, float | None]]) -> int:
    """Index of the best (success, return): highest success, then highest return (None lowest), then earliest."""
    keys = [(s, -math.inf if r is None else r, -i) for i, (s, r) in enumerate(scores)]
    return max(range(len(scores)), key=keys.__getitem__)


def mark_weights(trainer: OfflineTrainer, value: float) -> None:
    """Set every actor parameter to `value`, so that a saved checkpoint tells which step it was taken at."""
    with torch.no_grad():
        for param in trainer.agent.actor.parameters():
            param.fill_(value)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, expert_data):
    return offline_trainer(tmp_path_factory.mktemp("runs") / "best", expert_data, "total_steps=10")


SCORES = st.lists(
    st.tuples(st.sampled_from([0.0, 0.5, 1.0]), st.one_of(st.none(), st.integers(-3, 3))), min_size=1, max_size=8
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scores=SCORES)
def test_best_checkpoint_is_the_highest_success_then_return_then_earliest(trainer, scores):
    """best.pt holds the weights of the evaluation that the rule picks, and the report's best agrees with it."""
    trainer.best = None
    for step, (success, ret) in enumerate(scores, start=1):
        trainer.step = step
        mark_weights(trainer, float(step))
        trainer.keep_if_best(result([success, success], [ret, ret]))
    want = expected_best(scores) + 1
    _, state = checkpoint.load(trainer.run_dir, which="best")
    assert state["step"] == want and state["best"]["step"] == want
    assert state["best"]["score"][0] == scores[want - 1][0]
    assert all(torch.all(v == float(want)) for v in state["agent"]["actor"].values())
    run = Run(
        trainer.run_dir,
        {"mode": "offline"},
        TASKS,
        {i + 1: {t: s for t in TASKS} for i, (s, _) in enumerate(scores)},
        "mtrl",
        True,
        returns={i + 1: float(r) for i, (_, r) in enumerate(scores) if r is not None},
    )
    assert best_evaluation(run, run.steps, TASKS) + 1 == want


def test_which_best_resolves_best_pt_and_loads_its_weights(trainer):
    trainer.best = None
    for step, success in ((1, 0.5), (2, 1.0), (3, 0.0)):
        trainer.step = step
        mark_weights(trainer, float(step))
        trainer.keep_if_best(result([success, success], [1.0, 1.0]))
        trainer.save_checkpoint()
    run_dir = trainer.run_dir
    assert checkpoint.resolve(run_dir, "best") == run_dir / "checkpoints" / "best.pt"
    assert checkpoint.resolve(run_dir, "latest").name == "step_000000000003.pt"
    best, latest = load_policy(run_dir, "cpu", which="best"), load_policy(run_dir, "cpu", which="latest")
    assert all(torch.all(p == 2.0) for p in best.policy.network.parameters())
    assert all(torch.all(p == 3.0) for p in latest.policy.network.parameters())


def evaluated_steps(run_dir) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (run_dir / "eval").glob("step_*.json"))


def best_by_rule(run_dir) -> int:
    """The step the rule picks among the run's evaluation files."""
    steps = evaluated_steps(run_dir)
    scores = []
    for step in steps:
        data = json.loads((run_dir / "eval" / f"step_{step:012d}.json").read_text())
        scores.append((data["mean_success"], float(np.mean([t["mean_return"] for t in data["tasks"]]))))
    return steps[expected_best(scores)]


def test_offline_run_evaluates_on_schedule_keeps_best_across_resume_and_reports_it(tmp_path, expert_data):
    run_dir = tmp_path / "run"
    offline_trainer(run_dir, expert_data, "total_steps=20", "eval_every=5", "checkpoint_every=10").run()
    assert evaluated_steps(run_dir) == [5, 10, 15, 20]
    first = best_by_rule(run_dir)
    assert checkpoint.load(run_dir, which="best")[1]["step"] == first
    resumed = offline_trainer(
        run_dir, expert_data, "total_steps=35", "eval_every=5", "checkpoint_every=10", f"resume={run_dir}"
    )
    assert resumed.best["step"] == first  # the resumed run compares new evaluations with the earlier best
    resumed.run()
    assert evaluated_steps(run_dir) == [5, 10, 15, 20, 25, 30, 35]
    _, best = checkpoint.load(run_dir, which="best")
    assert best["step"] == best_by_rule(run_dir) and best["mode"] == "offline"

    # The report labels offline steps as gradient updates; its best is best.pt's evaluation, its final the last.
    report = write_report([run_dir], tmp_path / "report", reps=200)
    (group,) = report.groups
    assert group.step_unit == "gradient updates" and group.final_step == 35 and group.best_steps == [best["step"]]
    assert "35 updates" in report.markdown and "gradient updates (offline runs)" in report.markdown
    assert load_run(run_dir).mode == "offline"
    (online,) = summarize([Run(run_dir, {"mode": "online"}, TASKS, load_run(run_dir).evals, "mtrl", True)], reps=200)
    assert online.step_unit == "environment steps"


@pytest.mark.slow  # three evaluate.py processes
def test_evaluate_which_best_and_its_errors(tmp_path, expert_data):
    run_dir = tmp_path / "run"
    offline_trainer(run_dir, expert_data, "total_steps=10", "eval_every=5", "checkpoint_every=10").run()
    step = checkpoint.load(run_dir, which="best")[1]["step"]
    proc = run_cli("evaluate.py", f"checkpoint={run_dir}", "which=best", "device=cpu", "progress=false")
    assert proc.returncode == 0, proc.stderr
    written = json.loads((run_dir / "checkpoints" / "best_eval_mtrl.json").read_text())
    assert [t["task"] for t in written["tasks"]] == TASKS and step in (5, 10)
    assert_one_line_error(
        run_cli("evaluate.py", f"checkpoint={run_dir}", "which=bestest"), "which='bestest' is not allowed"
    )
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare)
    (bare / "checkpoints" / "best.pt").unlink()
    assert_one_line_error(
        run_cli("evaluate.py", f"checkpoint={bare}", "which=best"), "no best checkpoint in", "use which=latest"
    )


@pytest.mark.parametrize(
    "override,message",
    [
        ("agent.cql_alpha=-1", "agent.cql_alpha=-1"),
        ("agent.cql_num_actions=0", "agent.cql_num_actions=0"),
        ("agent.cql_temperature=0", "agent.cql_temperature=0"),
        ("agent.cql_lagrange=maybe", "agent.cql_lagrange='maybe'"),
        ("agent.cql_target_gap=nan", "agent.cql_target_gap=nan"),
        ("agent.cql_lagrange_lr=0", "agent.cql_lagrange_lr=0"),
        ("agent.deterministic_backup=2", "agent.deterministic_backup=2"),
        ("agent.bc_updates=-1", "agent.bc_updates=-1"),
        ("offline.normalize_obs=2", "offline.normalize_obs=2"),
    ],
)
def test_offline_agent_options_reject_bad_values_in_one_line(tmp_path, expert_data, override, message):
    with pytest.raises(UserError) as err:
        offline_trainer(tmp_path / "r", expert_data, override)
    text = str(err.value)
    assert text.startswith(message) and "is not allowed" in text and "\n" not in text
