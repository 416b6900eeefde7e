"""Multi-seed learning comparison with the Meta-World+ reference at one reduced setting, both run side by side.

    python benchmarks/learning_comparison.py run OUT [--seeds 1,2,3,4,5] [--vector-steps 30000] [--hidden 64,64]
    python benchmarks/learning_comparison.py summarize OUT [--write docs/results/learning_mwplus_mt10.json]

`run` calls the harness's `../shared/peer/learn.sh` once per seed (mtrl `experiment=mt10_mwplus` and the
reference's MTSAC at the same time, one pinned core each, the pinning swapped every seed; needs the peer venv of
`../shared/peer/setup.sh`). `summarize` reads every seed's mtrl evaluation and peer JSON under OUT and prints
(or writes) mean success over seeds with 95 % bootstrap confidence intervals (scipy, BCa over seeds), per
implementation and per task, and the difference of the means with its own interval.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT.parent / "shared" / "peer" / "learn.sh"


def run(out: Path, seeds: list[int], vector_steps: int, hidden: str) -> None:
    """One learn.sh call per seed; mtrl on core 0 for odd seeds, core 1 for even ones."""
    env = {**os.environ, "VSTEPS": str(vector_steps), "VWARM": "1000", "EPIS": "10", "HID": hidden}
    env.setdefault("MTRL_PY", sys.executable)
    env.setdefault("MTRL_MAIN", str(ROOT))
    for seed in seeds:
        cores = ("0", "1") if seed % 2 else ("1", "0")
        print(f"seed {seed}: mtrl on core {cores[0]}, reference on core {cores[1]}", flush=True)
        with (out / f"s{seed}.out").open("w") as log:
            command = ["bash", str(HARNESS), str(out / f"s{seed}"), *cores, str(seed)]
            subprocess.run(command, env=env, stdout=log, check=True)


def bootstrap(values: np.ndarray, seed: int = 0) -> list[float]:
    """95 % BCa bootstrap interval of the mean (the values themselves when they are all equal)."""
    if np.ptp(values) == 0:
        return [round(float(values[0]), 4)] * 2
    result = stats.bootstrap((values,), np.mean, confidence_level=0.95, method="BCa", random_state=seed)
    return [round(float(result.confidence_interval.low), 4), round(float(result.confidence_interval.high), 4)]


def read_seed(directory: Path) -> dict | None:
    """(mtrl, peer) results of one seed's learn.sh directory, or None when it is incomplete."""
    peer_file = directory / "peer-learn.json"
    evals = sorted((directory / "mtrl-run" / "eval").glob("step_*.json"))
    if not peer_file.is_file() or not evals:
        return None
    mtrl_eval = json.loads(evals[-1].read_text())
    peer = json.loads(peer_file.read_text())
    mtrl_tasks = {t["task"]: t["success_rate"] for t in mtrl_eval["tasks"]}
    return {
        "mtrl": {"mean": mtrl_eval["mean_success"], "tasks": mtrl_tasks},
        "peer": {"mean": peer["mean_success_rate"], "tasks": peer["success_per_task"]},
        "env_steps": peer["env_steps"],
    }


def summarize(out: Path) -> dict:
    seeds = {int(d.name[1:]): r for d in sorted(out.glob("s*")) if d.is_dir() and (r := read_seed(d)) is not None}
    if not seeds:
        raise SystemExit(f"error: no finished seed under {out} (expected s<seed>/peer-learn.json and mtrl-run/eval)")
    order = sorted(seeds)
    summary: dict = {"seeds": order, "env_steps": seeds[order[0]]["env_steps"]}
    for side in ("mtrl", "peer"):
        means = np.array([seeds[s][side]["mean"] for s in order])
        tasks = sorted(seeds[order[0]][side]["tasks"])
        summary[side] = {
            "mean_success": round(float(means.mean()), 4),
            "ci95": bootstrap(means),
            "per_seed": [round(float(m), 4) for m in means],
            "per_task": {t: round(float(np.mean([seeds[s][side]["tasks"][t] for s in order])), 3) for t in tasks},
        }
    difference = np.array([seeds[s]["mtrl"]["mean"] - seeds[s]["peer"]["mean"] for s in order])
    summary["mtrl_minus_peer"] = {"mean": round(float(difference.mean()), 4), "ci95": bootstrap(difference)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["run", "summarize"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--vector-steps", type=int, default=30000)
    parser.add_argument("--hidden", default="64,64")
    parser.add_argument("--write", type=Path, help="also write the summary JSON here")
    args = parser.parse_args()
    if args.mode == "run":
        args.out.mkdir(parents=True, exist_ok=True)
        run(args.out, [int(s) for s in args.seeds.split(",")], args.vector_steps, args.hidden)
        return
    summary = summarize(args.out)
    summary["setting"] = (
        "experiment=mt10_mwplus vs metaworld-algorithms MTSAC (examples/multi_task/mtsac_mt10.py), MT10, "
        f"{args.hidden.replace(',', ' x ')} ReLU networks, batch 128 per task, grad-norm clip 1, 1000 random "
        "vector steps then one update per vector step, 10 deterministic evaluation episodes per task at the end "
        "(episodes end at the first success); both at once, one pinned core and one thread each (learn.sh)"
    )
    summary["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    text = json.dumps(summary, indent=1)
    print(text)
    if args.write:
        args.write.write_text(text + "\n")


if __name__ == "__main__":
    main()
