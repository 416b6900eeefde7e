"""Aggregation on synthetic run directories with known numbers: IQM, CIs, final vs best, tables, figures, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from torch.utils.tensorboard import SummaryWriter

from mtrl.errors import UserError
from mtrl.report import load_runs, summarize, write_report
from mtrl.report.__main__ import main

TASKS = ["reach-v3", "push-v3"]
# Per seed: {step: per-task success}. Final step 200; seed 1 was better at step 100 (its best evaluation).
FAMO = {
    1: {100: [0.5, 0.5], 200: [0.0, 0.2]},
    2: {100: [0.1, 0.1], 200: [0.4, 0.6]},
    3: {100: [0.2, 0.2], 200: [0.8, 1.0]},
    4: {100: [0.0, 0.0], 200: [0.3, 0.5]},
}
# final: all 8 scores sorted 0 .2 .3 .4 .5 .6 .8 1 -> IQM = mean(.3 .4 .5 .6) = .45, mean = .475
# best:  .3 .4 .5 .5 .5 .6 .8 1 -> IQM = mean(.5 .5 .5 .6) = .525, mean = .575
UNIFORM = {1: {100: [0.0, 0.0], 200: [1.0, 0.0]}, 2: {100: [0.0, 0.0], 200: [1.0, 1.0]}}


def write_run(
    root: Path,
    balancer: str,
    seed: int,
    evals: dict[int, list[float]],
    *,
    eval_json: bool = True,
    weights: bool = True,
    total_steps: int = 200,
) -> Path:
    """A run directory as train.py writes it: config.yaml, env.json, eval/step_<N>.json, tb/ events."""
    run = root / f"balancer={balancer},seed={seed}"
    (run / "eval").mkdir(parents=True)
    config = {
        "env": {"tasks": TASKS, "protocol": "metaworld", "horizon": None, "goal_seed": None},
        "encoder": {"name": "onehot"},
        "balancer": {"name": balancer, **({"lr": 0.025} if balancer == "famo" else {})},
        "seed": seed,
        "total_steps": total_steps,
        "run_dir": str(run),
        "progress": False,
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "env.json").write_text(json.dumps({"benchmark": "custom", "tasks": TASKS}))
    writer = SummaryWriter(log_dir=str(run / "tb"))
    for step, scores in sorted(evals.items()):
        if eval_json:
            data = {
                "protocol": "metaworld",
                "seed": 0,
                "mean_success": float(np.mean(scores)),
                "tasks": [
                    {"task": t, "success_rate": s, "mean_return": 10.0, "episodes": 10} for t, s in zip(TASKS, scores)
                ],
            }
            (run / "eval" / f"step_{step:012d}.json").write_text(json.dumps(data))
        for task, score in zip(TASKS, scores):
            writer.add_scalar(f"eval/success/{task}", score, step)
    if weights:
        for step in range(0, 201, 50):
            w = 0.5 + (0.3 * step / 200 if balancer == "famo" else 0.0)
            for net in ("critic", "actor"):
                writer.add_scalar(f"balancer/{net}/weight/reach-v3", w, step)
                writer.add_scalar(f"balancer/{net}/weight/push-v3", 1.0 - w, step)
    writer.close()
    ckpt = run / "checkpoints"
    ckpt.mkdir()
    (ckpt / f"step_{max(evals):012d}.pt").write_bytes(b"")  # only the name matters for 'finished'
    return run


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    for seed, evals in FAMO.items():
        write_run(root, "famo", seed, evals)
    for seed, evals in UNIFORM.items():
        write_run(root, "uniform", seed, evals)
    return root


def test_known_iqm_and_mean_with_cis_that_contain_them(sweep):
    groups = {g.label: g for g in summarize(load_runs([sweep]), reps=1000, seed=0)}
    assert sorted(groups) == ["balancer=famo", "balancer=uniform"]  # balancer options (lr) go with the name
    famo = groups["balancer=famo"]
    assert famo.seeds == [1, 2, 3, 4] and famo.final_step == 200 and famo.tasks == TASKS
    expected = {"final_iqm": 0.45, "final_mean": 0.475, "best_iqm": 0.525, "best_mean": 0.575}
    for name, value in expected.items():
        est = getattr(famo, name)
        assert est.value == pytest.approx(value), name
        assert est.low <= value <= est.high and est.low < est.high, (name, est)
    assert famo.best_steps == [100, 200, 200, 200]
    np.testing.assert_allclose(famo.curve_mean, [np.mean([0.5, 0.1, 0.2, 0.0]), 0.475])
    assert np.all(famo.curve_low <= famo.curve_mean) and np.all(famo.curve_mean <= famo.curve_high)
    uniform = groups["balancer=uniform"]
    assert uniform.final_mean.value == pytest.approx(0.75)
    np.testing.assert_allclose(uniform.final_scores, [[1.0, 0.0], [1.0, 1.0]])


def test_report_writes_tables_and_non_empty_figures(sweep, tmp_path):
    out = tmp_path / "report"
    report = write_report([sweep], out, reps=500)
    for name in (
        "learning_curves.png",
        "per_task_success.png",
        "balancer_weights.png",
        "report.md",
        "summary.csv",
        "per_task.csv",
        "runs.csv",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("learning_curves.png", "per_task_success.png", "balancer_weights.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 5000
    text = report.markdown
    assert "final IQM [95% CI]" in text and "best mean [95% CI]" in text
    assert "| balancer=famo | 4 (1, 2, 3, 4) | 200 | 0.475 [" in text
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["method"] for r in rows] == ["balancer=famo", "balancer=uniform"]
    assert float(rows[0]["final_iqm"]) == pytest.approx(0.45)
    per_task = {(r["method"], r["task"]): r for r in csv.DictReader((out / "per_task.csv").open())}
    assert float(per_task[("balancer=famo", "push-v3")]["final_mean"]) == pytest.approx(0.575)
    assert float(per_task[("balancer=uniform", "reach-v3")]["final_mean"]) == pytest.approx(1.0)


def test_balancer_weights_only_for_runs_whose_weights_change(sweep):
    from mtrl.report.plots import weighted_groups

    groups = summarize(load_runs([sweep]), reps=200)
    chosen = weighted_groups(groups)
    assert [(g.label, nets) for g, nets in chosen] == [("balancer=famo", ["actor", "critic"])]
    run = groups[0].runs[0]
    assert run.weights["critic"]["reach-v3"][-1] == (200, pytest.approx(0.8))


def test_explicit_group_keys_and_tensorboard_fallback(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "famo", 1, FAMO[1], eval_json=False)  # evaluation only in TensorBoard
    write_run(root, "famo", 2, FAMO[2])
    runs = load_runs([root])
    assert [r.eval_source for r in runs] == ["tensorboard", "eval json"]
    assert runs[0].evals[200] == {"reach-v3": 0.0, "push-v3": pytest.approx(0.2)}
    groups = summarize(runs, group_by=["encoder"], reps=200)
    assert [g.label for g in groups] == ["encoder=onehot"] and len(groups[0].runs) == 2
    with pytest.raises(UserError, match="unknown group key 'optimizer'"):
        summarize(runs, group_by=["optimizer"])


def test_unfinished_runs_use_the_last_common_step(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "famo", 1, FAMO[1])
    write_run(root, "famo", 2, {100: FAMO[2][100]})  # stopped after its first evaluation
    (group,) = summarize(load_runs([root]), reps=200)
    assert group.final_step == 100
    assert any("unfinished" in note for note in group.notes) and any("final step 100" in n for n in group.notes)


def test_cli_one_line_errors(tmp_path, sweep, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no run directories found under") and err.count("\n") == 1
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([str(sweep), "--group-by", "nosuchkey", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown group key 'nosuchkey'") and err.count("\n") == 1
    assert main([str(sweep), "--reps", "5", "--out", str(tmp_path / "r")]) == 2
    assert "reps=5 is not allowed" in capsys.readouterr().err


def test_cli_prints_the_markdown_and_writes_files(sweep, tmp_path, capsys):
    out = tmp_path / "r"
    assert main([str(sweep), "--out", str(out), "--reps", "200", "--no-figures"]) == 0
    printed = capsys.readouterr().out
    assert "# mtrl results report" in printed and "balancer=uniform" in printed
    assert (out / "report.md").is_file() and not (out / "learning_curves.png").exists()
