"""Scalar vs categorical critic, each with and without BRC's return normalisation: a reduced-scale learning run.

    python benchmarks/critic_comparison.py OUT [--seeds 1 2 3] [--steps 100000] [--jobs 2]
    python benchmarks/critic_comparison.py OUT --summarize docs/results/critic_comparison.json

Every run is experiment=mt10_brc (BroNet, the shared task embedding, AdamW, the BRC temperature) reduced to four
Meta-World tasks under the mtrl protocol (one fixed goal each) with the 200-step horizon of the preset, small
widths (actor 2 x 64, critics 3 x 128), batch 256, one update per vector step; only `agent.critic_type` and
`agent.return_normalization` change between the four variants. Runs go to OUT/<variant>/s<seed> as train.py
subprocesses, `--jobs` at a time with one torch thread each; a finished run is skipped, so the command resumes.
The summary: per variant, mean success over tasks and seeds at the last evaluation, over the last two, and of the
training episodes in the last quarter of the run, with rliable's 95 % stratified bootstrap intervals
(mtrl/report/stats.py), and the learning curves.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.common import commit, machine
from mtrl.report.stats import interval_estimates

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["reach-v3", "drawer-close-v3", "button-press-topdown-v3", "door-open-v3"]
BASE = [
    "experiment=mt10_brc",
    f"env.tasks=[{','.join(TASKS)}]",
    "env.protocol=mtrl",
    "agent.actor_hidden_sizes=[64,64]",
    "agent.critic_hidden_sizes=[128,128,128]",
    "batch_size=256",
    "updates_per_step=1.0",
    "warmup_steps=4000",
    "replay_capacity=400000",
    "eval_episodes=1",
    "log_every=10000",
    "progress=false",
    "torch_threads=1",
]
VARIANTS = {
    "scalar": ["agent.critic_type=scalar", "agent.return_normalization=none"],
    "scalar+brc_norm": ["agent.critic_type=scalar", "agent.return_normalization=brc"],
    "categorical": ["agent.critic_type=categorical", "agent.return_normalization=none"],
    "categorical+brc_norm": ["agent.critic_type=categorical", "agent.return_normalization=brc"],
}


def overrides(variant: str, seed: int, steps: int, run_dir: Path) -> list[str]:
    evals = steps // 5
    return [*BASE, *VARIANTS[variant], f"seed={seed}", f"total_steps={steps}", f"eval_every={evals}",
            f"checkpoint_every={evals}", f"run_dir={run_dir}"]  # fmt: skip


def evaluations(run_dir: Path) -> list[dict]:
    """The run's evaluations in step order: env steps and per-task success."""
    out = []
    for path in sorted((run_dir / "eval").glob("step_*.json")):
        data = json.loads(path.read_text())
        out.append({"env_steps": int(path.stem.split("_")[1]), "success": [t["success_rate"] for t in data["tasks"]]})
    return out


def train(variant: str, seed: int, steps: int, out: Path) -> None:
    run_dir = out / variant / f"s{seed}"
    done = evaluations(run_dir) if run_dir.is_dir() else []
    if done and done[-1]["env_steps"] >= steps:
        return
    resume = [f"resume={run_dir}"] if (run_dir / "checkpoints").is_dir() else ["overwrite=true"]
    start = time.perf_counter()
    with (out / f"{variant}_s{seed}.log").open("w") as log:
        command = [sys.executable, str(ROOT / "train.py"), *overrides(variant, seed, steps, run_dir), *resume]
        subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    print(f"{variant} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)


def training_success(run_dir: Path, after: int) -> list[float]:
    """Per task: the mean success of the training episodes that ended after env step `after` (many episodes per
    task, so less noisy than one deterministic evaluation episode)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()
    return [float(np.mean([e.value for e in acc.Scalars(f"train/success/{t}") if e.step > after])) for t in TASKS]


def summarize(out: Path, seeds: list[int], steps: int) -> dict:
    """Per variant: the final and last-two-evaluations success and the training episodes' success over the last
    quarter of the run, with 95 % CIs, and the mean evaluation curve."""
    result = {}
    for variant in VARIANTS:
        dirs = [out / variant / f"s{seed}" for seed in seeds]
        done = [(d, evaluations(d)) for d in dirs if d.is_dir()]
        done = [(d, r) for d, r in done if r and r[-1]["env_steps"] >= steps]
        if not done:
            continue
        runs = [r for _, r in done]
        final = np.array([r[-1]["success"] for r in runs])  # (seeds, tasks)
        last_two = np.array([np.mean([e["success"] for e in r[-2:]], axis=0) for r in runs])
        training = np.array([training_success(d, int(0.75 * steps)) for d, _ in done])
        entry = {"seeds": len(runs)}
        measures = (("final", final), ("last_two_evaluations", last_two), ("training_last_quarter", training))
        for name, scores in measures:
            mean, _ = interval_estimates(scores, reps=2000, seed=0)
            entry[name] = {"mean": round(mean.value, 4), "ci95": [round(mean.low, 4), round(mean.high, 4)]}
        entry["per_task_final"] = dict(zip(TASKS, np.round(final.mean(0), 4).tolist()))
        entry["curve"] = [
            {"env_steps": e["env_steps"], "mean_success": round(float(np.mean([r[i]["success"] for r in runs])), 4)}
            for i, e in enumerate(runs[0])
        ]
        result[variant] = entry
    return {
        "what": "scalar vs categorical critic, with and without BRC return normalisation",
        "tasks": TASKS,
        "env_steps": steps,
        "seeds": seeds,
        "overrides": BASE,
        "commit": commit(),
        "machine": machine(),
        "machine_name": f"{machine()['cpu']}, {machine()['cores']} cores",
        "variants": result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--summarize", type=Path, help="write the summary JSON here (runs nothing)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summarize is None:
        jobs = [(variant, seed) for seed in args.seeds for variant in VARIANTS]
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda job: train(*job, args.steps, args.out), jobs))
    summary = summarize(args.out, args.seeds, args.steps)
    text = json.dumps(summary, indent=2)
    if args.summarize is not None:
        args.summarize.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
