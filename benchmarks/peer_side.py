"""mtrl's side of the side-by-side speed comparison with the Meta-World+ reference (../shared/peer/).

    python benchmarks/peer_side.py update [--hidden 400,400,400] [--seconds 25] [--updates 20] [--compile auto]
    python benchmarks/peer_side.py loop --run-dir DIR [--warmup 200] [--steps 400] [--skip 20] [--hidden 64,64]

`update`: the agent exactly as train.py builds it for `experiment=mt10_mwplus` (3 x 400 by default, one-hot,
uniform balancer, gradient-norm clip 1.0, compile=auto), one fixed batch of 128 rows per task, timed for at
least `--seconds` and `--updates` calls after 3 untimed ones; prints JSON with the keys of the harness's
`mtrl_bench.py update` (update_cpu_ms_mean is what `update_pair.sh` compares), plus acting on 10 observations.
`loop`: train.py's online loop on the same preset (warm-up, then one update per vector step) with a wall and
CPU time stamp at every learning vector step. Both honour BARRIER / BARRIER_N (start together with the peer).
Run it pinned and single-threaded as the harness does (`taskset -c N`, OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py, before torch loads
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import filled_replay  # noqa: E402

from mtrl.agents.factory import build_agent  # noqa: E402
from mtrl.config.schema import TrainConfig  # noqa: E402
from mtrl.runtime import keep_freed_memory  # noqa: E402

TASKS = 10


def wait_at_barrier() -> None:
    """With BARRIER=<path prefix> and BARRIER_N=n: touch <prefix>.<pid> and wait (5 min at most) for n such files."""
    prefix, count = os.environ.get("BARRIER"), int(os.environ.get("BARRIER_N", "0"))
    if not prefix or count < 2:
        return
    Path(f"{prefix}.{os.getpid()}").touch()
    folder, stem = Path(prefix).parent, Path(prefix).name
    deadline = time.time() + 300
    while len(list(folder.glob(f"{stem}.*"))) < count and time.time() < deadline:
        time.sleep(0.05)


def time_calls(fn: Callable[[], Any], seconds: float, at_least: int) -> list[float]:
    """Seconds per call of `fn`, called for `seconds` and at least `at_least` times."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < at_least or time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return times


def preset(overrides: list[str]) -> TrainConfig:
    """The typed config of `experiment=mt10_mwplus` with `overrides`, composed as train.py composes it."""
    from hydra import compose, initialize_config_dir

    from mtrl.config.parse import parse_train

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return parse_train(compose(config_name="train", overrides=["experiment=mt10_mwplus", *overrides]))


def machine() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "affinity": sorted(os.sched_getaffinity(0)),
        "loadavg_start": os.getloadavg(),
    }


def warmed_agent(hidden: str, threads: int, compile_mode: str) -> tuple[TrainConfig, Any, Any, float]:
    """The preset's agent as train.py builds it, one fixed batch, and the seconds of its first update (the
    compilation, if any); two more untimed updates follow."""
    config = preset([f"agent.hidden_sizes=[{hidden}]", f"torch_threads={threads}", f"compile={compile_mode}"])
    agent = build_agent(config, [f"task{i}" for i in range(TASKS)], 39, 4)
    batch = filled_replay(TASKS, per_task=256).sample(np.full(TASKS, config.batch_size_per_task))
    begin = time.perf_counter()
    agent.update(batch)
    first = time.perf_counter() - begin
    for _ in range(2):
        agent.update(batch)
    return config, agent, batch, first


def update(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    keep_freed_memory()  # as the trainer does
    torch.set_num_threads(args.threads)
    config, agent, batch, first = warmed_agent(args.hidden, args.threads, args.compile)
    wait_at_barrier()
    cpu = time.process_time()
    times = time_calls(lambda: agent.update(batch), args.seconds, args.updates)
    cpu_ms = 1e3 * (time.process_time() - cpu) / len(times)
    obs, ids = np.random.default_rng(0).normal(size=(TASKS, 39)).astype(np.float32), np.arange(TASKS)
    acting = time_calls(lambda: agent.act(obs, ids, deterministic=False), 0.0, 53)[3:]
    return {
        "what": "mtrl update micro-benchmark (experiment=mt10_mwplus agent), benchmarks/peer_side.py",
        "hidden": args.hidden,
        "batch": int(config.batch_size_per_task * TASKS),
        "clip_grad_norm": config.agent.clip_grad_norm,
        "compile": config.compile,
        "update_plan": {"compiled": agent.plan.compiled, "equal_counts": agent.plan.equal_counts},
        "first_call_s": round(first, 2),
        "update_ms_median": round(1e3 * float(np.median(times)), 2),
        "update_ms_mean": round(1e3 * float(np.mean(times)), 2),
        "update_cpu_ms_mean": round(cpu_ms, 2),
        "update_ms_all": [round(1e3 * t, 1) for t in times],
        "act_ms_median": round(1e3 * float(np.median(acting)), 3),
        "num_params": {
            "actor_num_params": sum(p.numel() for p in agent.actor.parameters()),
            "critic_num_params": sum(p.numel() for p in agent.critic.parameters()),
        },
    }


def loop(args: argparse.Namespace) -> dict[str, Any]:
    from mtrl.train.trainer import Trainer

    config = preset(
        [
            "torch_threads=1",
            "progress=false",
            f"run_dir={args.run_dir}",
            f"total_steps={(args.warmup + args.steps) * TASKS}",
            f"warmup_steps={args.warmup * TASKS}",
            "eval_every=0",
            "eval_episodes=1",
            "checkpoint_every=0",
            "log_every=500",
            "overwrite=true",
            f"agent.hidden_sizes=[{args.hidden}]",
            *args.extra,
        ]
    )
    trainer = Trainer(config, Path(args.run_dir))
    stamps: list[tuple[float, float]] = []
    learn = trainer.learn

    def stamped_learn() -> None:  # one stamp per learning vector step: acting, env step, store, one update
        if trainer.learning_ready():
            stamps.append((time.perf_counter(), time.process_time()))
        learn()

    trainer.learn = stamped_learn  # type: ignore[method-assign]
    begin = time.perf_counter()
    trainer.run()
    total = time.perf_counter() - begin
    wall, cpu = (np.diff(np.array(stamps)[:, i])[args.skip :] for i in (0, 1))
    return {
        "what": "mtrl loop (Trainer.run, experiment=mt10_mwplus), benchmarks/peer_side.py",
        "hidden": args.hidden,
        "vector_env": type(trainer.env.vector_env).__name__,
        "vector_steps_timed": int(len(wall)),
        "step_ms_median": round(1e3 * float(np.median(wall)), 2),
        "step_ms_mean": round(1e3 * float(wall.mean()), 2),
        "step_cpu_ms_mean": round(1e3 * float(cpu.mean()), 2),
        "cpu_over_wall": round(float(cpu.sum() / wall.sum()), 3),
        "env_steps_per_s": round(TASKS / float(wall.mean()), 1),
        "updates_per_s": round(1 / float(wall.mean()), 3),
        "total_s": round(total, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["update", "loop"])
    parser.add_argument("--hidden", default="400,400,400", help="actor and critic widths, comma-separated")
    parser.add_argument("--updates", type=int, default=30, help="update: at least this many timed calls")
    parser.add_argument("--seconds", type=float, default=0.0, help="update: time calls for at least this long")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", default="auto", help="update: mtrl's compile option")
    parser.add_argument("--run-dir", help="loop: the run directory (overwritten)")
    parser.add_argument("--warmup", type=int, default=200, help="loop: vector steps of random actions")
    parser.add_argument("--steps", type=int, default=400, help="loop: vector steps after the warm-up")
    parser.add_argument("--skip", type=int, default=20, help="loop: learning vector steps not timed")
    parser.add_argument("--extra", nargs="*", default=[], help="loop: more train.py overrides")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.mode == "loop" and not args.run_dir:
        parser.error("loop needs --run-dir")
    start = machine()
    result = {"update": update, "loop": loop}[args.mode](args)
    result["machine"] = {**start, "loadavg_end": os.getloadavg()}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
