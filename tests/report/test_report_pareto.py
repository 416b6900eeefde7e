"""The report's Pareto MTL figure: a preference sweep beside a baseline keeps one group per preference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mtrl.report import load_runs, summarize, write_report


def write_run(root: Path, balancer: dict, seed: int, tasks: list[str], scores: list[float]) -> Path:
    """A finished-looking run directory: config.yaml, env.json and one evaluation at step 100."""
    name = ",".join(f"{k}={v}" for k, v in balancer.items()) + f",seed={seed}"
    run = root / name
    (run / "eval").mkdir(parents=True)
    config = {
        "env": {"tasks": tasks, "protocol": "mtrl"},
        "seed": seed,
        "total_steps": 100,
        "balancer": {"apply_to": ["critic"], **balancer},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "env.json").write_text(json.dumps({"tasks": tasks}))
    data = {"protocol": "mtrl", "tasks": [{"task": t, "success_rate": s} for t, s in zip(tasks, scores)]}
    (run / "eval" / f"step_{100:012d}.json").write_text(json.dumps(data))
    return run


def sweep(root: Path, tasks: list[str]) -> Path:
    for pref in range(3):
        for seed in (1, 2):
            scores = [0.2 + 0.3 * pref + 0.05 * seed, 0.9 - 0.3 * pref] + [0.5] * (len(tasks) - 2)
            write_run(root, {"name": "paretomtl", "num_preferences": 3, "preference": pref}, seed, tasks, scores)
    write_run(root, {"name": "uniform"}, 1, tasks, [0.5] * len(tasks))
    return root


@pytest.mark.parametrize("num_tasks", [2, 3, 4])
def test_preference_sweep_gets_one_group_per_preference_and_a_pareto_figure(tmp_path, num_tasks):
    tasks = ["reach-v3", "push-v3", "door-open-v3", "drawer-close-v3"][:num_tasks]
    root = sweep(tmp_path / "sweep", tasks)
    labels = [g.label for g in summarize(load_runs([root]), reps=100)]
    assert labels == [
        "balancer=paretomtl,balancer.preference=0",
        "balancer=paretomtl,balancer.preference=1",
        "balancer=paretomtl,balancer.preference=2",
        "balancer=uniform",
    ]
    report = write_report([root], tmp_path / "out", reps=100)
    figure = report.files["pareto_front"]
    assert figure.name == "pareto_front.png" and figure.stat().st_size > 1000
    assert "![pareto front](pareto_front.png)" in report.markdown


def test_no_pareto_figure_without_a_preference_sweep(tmp_path):
    root = tmp_path / "sweep"
    write_run(root, {"name": "paretomtl", "preference": 0}, 1, ["reach-v3", "push-v3"], [0.1, 0.2])
    write_run(root, {"name": "uniform"}, 1, ["reach-v3", "push-v3"], [0.5, 0.5])
    report = write_report([root], tmp_path / "out", reps=100)
    assert "pareto_front" not in report.files
