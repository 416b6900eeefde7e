"""Summarise an offline dataset: per task, transitions, episodes, success rate and return statistics.

python -m mtrl.data.summary data/x.h5 [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.data.dataset import Dataset, load_dataset
from mtrl.errors import UserError


def task_rows(dataset: Dataset) -> list[dict[str, Any]]:
    """One dict per task: transitions, episodes, episode success rate, return mean/std/min/max, how made."""
    rows = []
    for name in dataset.task_names:
        data = dataset.tasks[name]
        stats = data.episode_stats()
        returns = stats["returns"]
        rows.append(
            {
                "task": name,
                "transitions": len(data),
                "episodes": data.num_episodes,
                "success_rate": float(stats["success"].mean()),
                "return_mean": float(returns.mean()),
                "return_std": float(returns.std()),
                "return_min": float(returns.min()),
                "return_max": float(returns.max()),
                "mean_length": float(stats["lengths"].mean()),
                "policy": data.source.get("policy"),
                "noise": data.source.get("noise"),
                "random_fraction": data.source.get("random_fraction"),
            }
        )
    return rows


def summary_dict(dataset: Dataset) -> dict[str, Any]:
    return {
        "path": str(dataset.path),
        "dataset_id": dataset.dataset_id,
        "created": dataset.created,
        "benchmark": dataset.benchmark,
        "protocol": dataset.protocol,
        "goal_seed": dataset.goal_seed,
        "obs_dim": dataset.obs_dim,
        "act_dim": dataset.act_dim,
        "collection": dataset.collection,
        "software": dataset.software,
        "tasks": task_rows(dataset),
    }


def format_table(dataset: Dataset) -> str:
    rows = task_rows(dataset)
    width = max(len("task"), *(len(r["task"]) for r in rows))
    proto = dataset.protocol
    lines = [
        f"dataset {dataset.path} ({dataset.benchmark}, protocol {proto.get('name')} horizon {proto.get('horizon')}, "
        f"goal seed {dataset.goal_seed}, {len(rows)} tasks, {dataset.num_transitions} transitions, "
        f"created {dataset.created})",
        f"{'task':<{width}}  {'transitions':>11}  {'episodes':>8}  {'success':>7}  {'return mean':>11}  "
        f"{'std':>8}  {'min':>8}  {'max':>8}  policy (noise, random fraction)",
    ]
    for r in rows:
        lines.append(
            f"{r['task']:<{width}}  {r['transitions']:>11d}  {r['episodes']:>8d}  {r['success_rate']:>7.3f}  "
            f"{r['return_mean']:>11.2f}  {r['return_std']:>8.2f}  {r['return_min']:>8.2f}  "
            f"{r['return_max']:>8.2f}  {r['policy']} ({r['noise']}, {r['random_fraction']})"
        )
    mean_success = float(np.mean([r["success_rate"] for r in rows]))
    lines.append(f"{'mean over tasks':<{width}}  {'':>11}  {'':>8}  {mean_success:>7.3f}")
    return "\n".join(lines)


def summarize(path: str | Path) -> str:
    return format_table(load_dataset(path, with_state=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtrl.data.summary", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="the dataset's .h5 file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        dataset = load_dataset(args.path, with_state=False)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary_dict(dataset), indent=2) if args.json else format_table(dataset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
