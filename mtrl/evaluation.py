"""Evaluation: run a policy for N episodes per task with the protocol's goals; per-task results to JSON/CSV."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from envs.vector import MultiTaskVectorEnv, StepResult

PolicyFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class TaskResult:
    task: str
    success_rate: float
    mean_return: float
    episodes: int


@dataclass
class EvalResult:
    """Per-task success and return, plus the protocol and seed that produced them."""

    protocol: str
    seed: int
    tasks: list[TaskResult]

    @property
    def mean_success(self) -> float:
        return float(np.mean([t.success_rate for t in self.tasks]))

    def to_dict(self) -> dict:
        return {"protocol": self.protocol, "seed": self.seed, "mean_success": self.mean_success,
                "tasks": [asdict(t) for t in self.tasks]}

    def table(self) -> str:
        """A plain-text per-task table with the mean success over tasks."""
        width = max(len("task"), *(len(t.task) for t in self.tasks))
        lines = [f"{'task':<{width}}  success  mean_return  episodes"]
        lines += [f"{t.task:<{width}}  {t.success_rate:7.3f}  {t.mean_return:11.2f}  {t.episodes:8d}" for t in self.tasks]
        lines.append(f"{'mean over tasks':<{width}}  {self.mean_success:7.3f}   (protocol={self.protocol}, seed={self.seed})")
        return "\n".join(lines)

    def write(self, json_path: Path) -> tuple[Path, Path]:
        """Write the JSON file and a CSV beside it (same stem)."""
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(self.to_dict(), indent=2))
        csv_path = json_path.with_suffix(".csv")
        with csv_path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["task", "success_rate", "mean_return", "episodes"])
            writer.writerows([t.task, t.success_rate, t.mean_return, t.episodes] for t in self.tasks)
        return json_path, csv_path


class StepRecorder(Protocol):
    """An evaluation hook (e.g. `mtrl.video.VideoRecorder`): sees the env before and the result after each step."""

    def before_step(self, env: MultiTaskVectorEnv) -> None: ...

    def after_step(self, step: StepResult) -> None: ...


def evaluate(policy: PolicyFn, env: MultiTaskVectorEnv, episodes_per_task: int, seed: int,
             recorder: StepRecorder | None = None) -> EvalResult:
    """Run `episodes_per_task` full episodes in every slot; goals restart at goal 0 for each evaluation.

    `recorder` (optional) is called before and after every vector step, e.g. to render video frames.
    """
    env.restart_goal_cycle()
    obs = env.reset(seed=seed)
    returns: list[list[float]] = [[] for _ in range(env.num_envs)]
    successes: list[list[bool]] = [[] for _ in range(env.num_envs)]
    while min(len(r) for r in returns) < episodes_per_task:
        if recorder is not None:
            recorder.before_step(env)
        step = env.step(policy(obs, env.task_ids))
        if recorder is not None:
            recorder.after_step(step)
        obs = step.obs
        for episode in step.episodes:
            slot = episode.task_id
            returns[slot].append(episode.ret)
            successes[slot].append(episode.success)
    tasks = [
        TaskResult(name, float(np.mean(successes[i][:episodes_per_task])),
                   float(np.mean(returns[i][:episodes_per_task])), episodes_per_task)
        for i, name in enumerate(env.task_names)
    ]
    return EvalResult(env.protocol.name, seed, tasks)
