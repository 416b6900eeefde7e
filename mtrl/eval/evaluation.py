"""Evaluation: run a policy for N episodes per task with the protocol's goals; per-task results to JSON/CSV.

An episode's success is decided at its first successful step, so by default an evaluation episode ends
there (as Meta-World's own `evaluation` does with `terminate_on_success`); the episodes evaluated are the
same as with full-length episodes (episode k of a task still gets goal k of the protocol's cycle, every
reset restores the same start state), only shorter. Returns are then not measured (`mean_return` is None).
Episodes run to the horizon when returns are asked for (`returns=True`) or a recorder (video) is attached.
A task whose episodes are all done stops stepping while the others finish.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
from tqdm import tqdm

from envs.vector import MultiTaskVectorEnv, StepResult

PolicyFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class TaskResult:
    task: str
    success_rate: float
    mean_return: float | None  # None when episodes ended at their first success (returns not measured)
    episodes: int


@dataclass
class EvalResult:
    """Per-task success (and return when measured), the protocol and seed that produced them, and the cost."""

    protocol: str
    seed: int
    tasks: list[TaskResult]
    seconds: float = 0.0  # wall time of the evaluation
    env_steps: int = 0  # single-env steps taken (stepped slots summed over vector steps)
    source: dict = field(default_factory=dict)  # what was evaluated (evaluate.py: checkpoint path, step, config hash)

    @property
    def mean_success(self) -> float:
        return float(np.mean([t.success_rate for t in self.tasks]))

    def to_dict(self) -> dict:
        return {
            "protocol": self.protocol,
            "seed": self.seed,
            "mean_success": self.mean_success,
            "seconds": self.seconds,
            "env_steps": self.env_steps,
            "tasks": [asdict(t) for t in self.tasks],
            **({"source": self.source} if self.source else {}),
        }

    def table(self) -> str:
        """A plain-text per-task table with the mean success over tasks ("-": return not measured)."""
        width = max(len("mean over tasks"), *(len(t.task) for t in self.tasks))
        lines = [f"{'task':<{width}}  success  mean_return  episodes"]
        lines += [
            f"{t.task:<{width}}  {t.success_rate:7.3f}  {_cell(t.mean_return):>11}  {t.episodes:8d}" for t in self.tasks
        ]
        lines.append(
            f"{'mean over tasks':<{width}}  {self.mean_success:7.3f}   (protocol={self.protocol}, "
            f"seed={self.seed}; {self.env_steps} env steps in {self.seconds:.1f} s)"
        )
        return "\n".join(lines)

    def write(self, json_path: Path) -> tuple[Path, Path]:
        """Write the JSON file (null: return not measured) and a CSV beside it (same stem; empty cell)."""
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(self.to_dict(), indent=2))
        csv_path = json_path.with_suffix(".csv")
        with csv_path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["task", "success_rate", "mean_return", "episodes"])
            writer.writerows(
                [t.task, t.success_rate, "" if t.mean_return is None else t.mean_return, t.episodes] for t in self.tasks
            )
        return json_path, csv_path


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


class StepRecorder(Protocol):
    """An evaluation hook (e.g. `mtrl.eval.video.VideoRecorder`): sees the env before and the result after each step."""

    def before_step(self, env: MultiTaskVectorEnv) -> None: ...

    def after_step(self, step: StepResult) -> None: ...


class EpisodeTally:
    """Finished episodes per task slot, up to `episodes` each, with a progress bar of the running success rate."""

    def __init__(self, task_names: list[str], episodes: int, progress: bool):
        k = len(task_names)
        self.task_names, self.episodes = task_names, episodes
        self.returns: list[list[float]] = [[] for _ in range(k)]
        self.successes: list[list[bool]] = [[] for _ in range(k)]
        self.done = np.zeros(k, dtype=np.int64)
        self.bar = tqdm(
            total=k * episodes,
            desc="eval",
            unit="episode",
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
            disable=not progress,
        )

    @property
    def unfinished(self) -> np.ndarray:
        """(K,) bool: the slots that still owe episodes."""
        return self.done < self.episodes

    def record(self, episodes: list) -> None:
        """Count finished episodes (beyond a slot's quota they are ignored, e.g. extra ones for a video)."""
        for episode in episodes:
            slot = episode.task_id
            if self.done[slot] < self.episodes:
                self.returns[slot].append(episode.ret)
                self.successes[slot].append(episode.success)
                self.done[slot] += 1
                self.bar.update(1)
                rate = sum(map(sum, self.successes)) / self.done.sum()
                self.bar.set_postfix(success=f"{rate:.2f}", refresh=False)

    def results(self, with_returns: bool) -> list[TaskResult]:
        return [
            TaskResult(
                name,
                float(np.mean(self.successes[i])),
                float(np.mean(self.returns[i])) if with_returns else None,
                self.episodes,
            )
            for i, name in enumerate(self.task_names)
        ]


def evaluate(
    policy: PolicyFn,
    env: MultiTaskVectorEnv,
    episodes_per_task: int,
    seed: int,
    recorder: StepRecorder | None = None,
    *,
    returns: bool = False,
    progress: bool = True,
) -> EvalResult:
    """Run `episodes_per_task` episodes of every task (one env slot per task); goals restart at goal 0.

    Episodes end at their first success unless `returns` is set or a `recorder` is attached (module doc).
    `recorder` is called before and after every vector step, e.g. to render video frames. `progress` shows a
    bar of finished episodes with the running success rate on stderr (removed when done).
    """
    start = time.perf_counter()
    k = len(env.task_names)
    full_length = returns or recorder is not None
    env.set_end_on_success(not full_length)
    env.restart_goal_cycle()
    obs = env.reset(seed=seed)
    if env.num_envs != k or not np.array_equal(env.task_ids, np.arange(k)):
        raise ValueError("evaluate needs one env slot per task in task order (build the env with evaluation=True)")
    tally = EpisodeTally(list(env.task_names), episodes_per_task, progress)
    env_steps = 0
    try:
        while tally.unfinished.any():
            # A recorder may want more episodes of a slot than are evaluated: it keeps every slot stepping.
            active = None if recorder is not None else tally.unfinished
            if recorder is not None:
                recorder.before_step(env)
            step = env.step(policy(obs, env.task_ids), active=active)
            if recorder is not None:
                recorder.after_step(step)
            env_steps += k if active is None else int(active.sum())
            obs = step.obs
            tally.record(step.episodes)
    finally:
        tally.bar.close()
    env.set_end_on_success(False)
    return EvalResult(env.protocol.name, seed, tally.results(full_length), time.perf_counter() - start, env_steps)
