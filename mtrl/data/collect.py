"""Collect an offline multi-task dataset with Meta-World's scripted experts or a trained checkpoint.

    python -m mtrl.data.collect env=mt10 env.protocol=mtrl episodes_per_task=5 noise=0.1 output=data/x.h5
    python -m mtrl.data.collect env.tasks=[reach-v3,push-v3] output=data/y.h5 \
        'per_task={push-v3:{noise:1.0,random_fraction:0.5,episodes:3}}'

Each step's action is the policy's action plus Gaussian noise of std `noise`, clipped to [-1, 1];
with probability `random_fraction` it is replaced by a uniform random action. Both can be set per
task, so a dataset can hold expert data for some tasks and poor data for others. Episodes follow
the env's protocol (goals and horizon). The file is written atomically (see mtrl.data.dataset).
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from envs import EnvSpec, build_env_spec
from envs.relabel import arm_indices, capture_state
from envs.scripted import ScriptedPolicy
from envs.single import make_task_env
from envs.tasks import resolve_tasks
from mtrl.config import to_plain
from mtrl.data.dataset import ARRAY_FIELDS, DatasetWriter, TaskData
from mtrl.errors import UserError

POLICIES = ("scripted", "sac")
PLAN_KEYS = ("episodes", "noise", "random_fraction")
ActFn = Callable[[np.ndarray], np.ndarray]  # one raw observation (obs_dim,) -> action (act_dim,)


@dataclass
class TaskPlan:
    """How one task's data are made."""

    task: str
    episodes: int
    noise: float
    random_fraction: float


def _check_plan_value(where: str, key: str, value: Any) -> Any:
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if key == "episodes":
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise UserError(f"{where}={value} is not allowed; expected an integer >= 1")
        return int(value)
    if key == "noise":
        if not number or not math.isfinite(value) or value < 0:
            raise UserError(f"{where}={value} is not allowed; expected a number >= 0 (std of the action noise)")
        return float(value)
    if not number or not 0 <= value <= 1:
        raise UserError(f"{where}={value} is not allowed; expected a number in [0, 1]")
    return float(value)


def plan_tasks(cfg: DictConfig, task_names: list[str]) -> list[TaskPlan]:
    """The per-task plan: global episodes/noise/random_fraction, then the `per_task` overrides."""
    base = {"episodes": _check_plan_value("episodes_per_task", "episodes", cfg.episodes_per_task),
            "noise": _check_plan_value("noise", "noise", cfg.noise),
            "random_fraction": _check_plan_value("random_fraction", "random_fraction", cfg.random_fraction)}
    overrides = to_plain(cfg.per_task) or {}
    if not isinstance(overrides, dict):
        raise UserError(f"per_task={overrides} is not allowed; use per_task={{<task>:{{noise:1.0,episodes:3}}}}")
    plans = {name: dict(base) for name in task_names}
    for raw_name, options in overrides.items():
        _, (name,) = resolve_tasks([str(raw_name)])
        if name not in plans:
            raise UserError(f"per_task names {name}, which is not one of env.tasks ({', '.join(task_names)})")
        if not isinstance(options, dict):
            raise UserError(f"per_task.{name}={options} is not allowed; give a mapping such as {{noise:1.0,episodes:3}}")
        for key, value in options.items():
            if key not in PLAN_KEYS:
                raise UserError(f"per_task.{name}.{key} is not an option; allowed: {', '.join(PLAN_KEYS)}")
            plans[name][key] = _check_plan_value(f"per_task.{name}.{key}", key, value)
    return [TaskPlan(name, **plans[name]) for name in task_names]


def make_policies(cfg: DictConfig, spec: EnvSpec) -> tuple[dict[str, ActFn], dict[str, Any]]:
    """One act function per task, and a description of the policy for the dataset's metadata."""
    policy = cfg.policy or ("sac" if cfg.checkpoint else "scripted")
    if policy not in POLICIES:
        raise UserError(f"policy={cfg.policy} is not allowed; use scripted (Meta-World's experts) or "
                        f"sac with checkpoint=<run dir>")
    if policy == "scripted":
        if cfg.checkpoint:
            raise UserError("checkpoint= is given with policy=scripted; drop one of them")
        experts = {name: ScriptedPolicy([name]) for name in spec.task_names}
        zero = np.zeros(1, np.int64)
        return ({name: (lambda obs, e=expert: e.act(obs[None], zero)[0]) for name, expert in experts.items()},
                {"policy": "scripted", "checkpoint": None})
    if not cfg.checkpoint:
        raise UserError("policy=sac needs checkpoint=<run dir or checkpoint file>")
    from mtrl import checkpoint
    from mtrl.trainer import build_agent

    file, state = checkpoint.load(cfg.checkpoint)
    trained = list(state["env"]["tasks"])
    missing = [t for t in spec.task_names if t not in trained]
    if missing:
        raise UserError(f"checkpoint '{file}' was trained on {', '.join(trained)}; it has no policy for "
                        f"{', '.join(missing)}")
    saved = OmegaConf.create(state["config"])
    saved.device = cfg.device
    saved_spec = build_env_spec({**state["config"]["env"], "goal_seed": state["env"]["goal_seed"]},
                                state["config"]["seed"])
    agent = build_agent(saved, saved_spec, state["dims"]["obs"], state["dims"]["act"])
    agent.load_state_dict(state["agent"], networks_only=True)
    deterministic = bool(cfg.deterministic)

    def act_for(task_id: int) -> ActFn:
        ids = np.array([task_id], np.int64)
        return lambda obs: agent.act(obs[None].astype(np.float32), ids, deterministic=deterministic)[0]

    return ({name: act_for(trained.index(name)) for name in spec.task_names},
            {"policy": "sac", "checkpoint": str(file), "deterministic": deterministic})


def _run_episode(env, act: ActFn, plan: TaskPlan, rng: np.random.Generator, episode: int, reset_seed: int | None,
                 horizon: int, rows: dict[str, list]) -> None:
    """One episode: policy action + Gaussian noise, or (with prob. random_fraction) a uniform action."""
    low, high = env.action_space.low, env.action_space.high
    obs, info = env.reset(seed=reset_seed)
    goal_index = int(info["goal_index"])
    for step in range(horizon):
        action = np.asarray(act(np.asarray(obs)), np.float64)
        if plan.noise > 0:
            action = action + plan.noise * rng.standard_normal(action.shape)
        if plan.random_fraction > 0 and rng.random() < plan.random_fraction:
            action = rng.uniform(low, high)
        action = np.clip(action, low, high).astype(np.float32)
        next_obs, reward, terminated, truncated, info = env.step(action)
        values = {"obs": obs, "action": action, "reward": reward, "next_obs": next_obs, "terminated": terminated,
                  "truncated": truncated, "success": float(info.get("success", 0.0)) > 0.5, "episode": episode,
                  "step": step, "goal_index": goal_index, **capture_state(env)}
        for key, value in values.items():
            rows[key].append(value)
        obs = next_obs
        if terminated or truncated:
            break


def collect_task(spec: EnvSpec, plan: TaskPlan, act: ActFn, seed: int, task_index: int,
                 on_episode: Callable[[], None] | None = None) -> TaskData:
    """Run `plan.episodes` episodes of one task and return them as TaskData (with the MuJoCo states)."""
    name, proto = plan.task, spec.protocol
    env_seed = seed + task_index
    env = make_task_env(name, spec.goals[name][: proto.goals_per_task], proto.train_goals, proto.horizon, env_seed)
    rng = np.random.default_rng([seed, task_index])
    rows: dict[str, list] = {key: [] for key in ARRAY_FIELDS}
    try:
        with warnings.catch_warnings():
            # Meta-World's scripted experts warn that their gains exceed 1; the actions are clipped anyway.
            warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", category=UserWarning)
            for episode in range(plan.episodes):
                _run_episode(env, act, plan, rng, episode, env_seed if episode == 0 else None, proto.horizon, rows)
                if on_episode is not None:
                    on_episode()
        arm_q, arm_v = arm_indices(env.unwrapped.model)
    finally:
        env.close()
    arrays = {key: np.asarray(values, dtype=ARRAY_FIELDS[key][0]) for key, values in rows.items()}
    goals = [g.data for g in spec.goals[name][: proto.goals_per_task]]
    return TaskData(name=name, **arrays, arm_qpos_index=arm_q, arm_qvel_index=arm_v, goals=goals,
                    source={**asdict(plan)})


def collect(cfg: DictConfig) -> Path:
    """Collect the dataset the config describes and write it atomically; returns its path."""
    if not cfg.output:
        raise UserError("output=<path.h5> is required: the dataset file to write")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise UserError(f"seed={cfg.seed} is not allowed; expected an integer >= 0")
    spec = build_env_spec(to_plain(cfg.env), cfg.seed)
    plans = plan_tasks(cfg, spec.task_names)
    acts, policy_info = make_policies(cfg, spec)
    probe = make_task_env(spec.task_names[0], spec.goals[spec.task_names[0]][:1], "fixed", 1, cfg.seed)
    obs_dim = int(np.prod(probe.observation_space.shape))
    act_dim = int(np.prod(probe.action_space.shape))
    probe.close()
    collection = {**policy_info, "seed": cfg.seed, "episodes_per_task": cfg.episodes_per_task, "noise": cfg.noise,
                  "random_fraction": cfg.random_fraction, "per_task": to_plain(cfg.per_task) or {},
                  "tasks": [asdict(p) for p in plans], "command": " ".join(sys.argv[1:])}
    meta = dict(benchmark=spec.benchmark, task_names=spec.task_names, protocol=spec.protocol.to_dict(),
                goal_seed=spec.goal_seed, obs_dim=obs_dim, act_dim=act_dim, collection=collection)
    total = sum(p.episodes for p in plans)
    with DatasetWriter(cfg.output, overwrite=bool(cfg.overwrite), **meta) as writer, \
            tqdm(total=total, unit="episode", desc="collect", disable=not cfg.progress, dynamic_ncols=True) as bar:
        for index, plan in enumerate(plans):
            bar.set_postfix(task=plan.task, refresh=True)
            data = collect_task(spec, plan, acts[plan.task], cfg.seed, index, on_episode=lambda: bar.update(1))
            data.source.update(policy_info)
            writer.add_task(data)
        path = writer.commit()
    return path


def main() -> None:
    from mtrl.cli import hydra_main, reports_user_errors

    @reports_user_errors
    def run(cfg: DictConfig) -> None:
        path = collect(cfg)
        from mtrl.data.summary import summarize

        print(summarize(path))
        print(f"wrote {path}")

    hydra_main(Path(__file__).resolve().parents[2] / "configs", "collect", run)


if __name__ == "__main__":
    main()
