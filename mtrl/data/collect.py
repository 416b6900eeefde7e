"""Collect an offline multi-task dataset with Meta-World's scripted experts or a trained checkpoint.

    python collect.py env=mt10 env.protocol=mtrl episodes_per_task=5 noise=0.1 output=data/x.h5
    python collect.py env.tasks=[reach-v3,push-v3] output=data/y.h5 \
        'per_task={push-v3:{noise:1.0,random_fraction:0.5,episodes:3}}'

Each step's action is the policy's action plus Gaussian noise of std `noise`, clipped to [-1, 1];
with probability `random_fraction` it is replaced by a uniform random action. Both can be set per
task, so a dataset can hold expert data for some tasks and poor data for others. Episodes follow
the env's protocol (goals and horizon). The file is written atomically (see mtrl.data.dataset).
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from envs import EnvSpec, build_env_spec
from envs.relabel import arm_indices, capture_state
from envs.scripted import ScriptedPolicy
from envs.single import make_task_env
from envs.tasks import resolve_tasks
from mtrl import checks
from mtrl.config.schema import CollectConfig
from mtrl.data.dataset import ARRAY_FIELDS, DatasetWriter, TaskData
from mtrl.errors import UserError
from mtrl.train.guard import check_actions

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
    if key == "episodes":
        return checks.integer(where, value, 1)
    if key == "noise":
        return checks.number(where, value, 0)
    return checks.number(where, value, 0, 1)


def plan_tasks(config: CollectConfig, task_names: list[str]) -> list[TaskPlan]:
    """The per-task plan: global episodes/noise/random_fraction, then the `per_task` overrides."""
    base = {"episodes": config.episodes_per_task, "noise": config.noise, "random_fraction": config.random_fraction}
    plans = {name: dict(base) for name in task_names}
    for raw_name, options in config.per_task.items():
        _, (name,) = resolve_tasks([str(raw_name)])
        if name not in plans:
            raise UserError(f"per_task names {name}, which is not one of env.tasks ({', '.join(task_names)})")
        if not isinstance(options, dict):
            raise checks.fail(f"per_task.{name}", options, "a mapping such as {noise:1.0,episodes:3}")
        checks.unknown_keys(f"per_task.{name}.", list(options), PLAN_KEYS)
        for key, value in options.items():
            plans[name][key] = _check_plan_value(f"per_task.{name}.{key}", key, value)
    return [TaskPlan(name, **plans[name]) for name in task_names]


def make_policies(config: CollectConfig, spec: EnvSpec) -> tuple[dict[str, ActFn], dict[str, Any]]:
    """One act function per task, and a description of the policy for the dataset's metadata."""
    policy = config.policy or ("agent" if config.checkpoint else "scripted")
    if policy == "scripted":
        if config.checkpoint:
            raise UserError("checkpoint= is given with policy=scripted; drop one of them")
        experts = {name: ScriptedPolicy([name]) for name in spec.task_names}
        zero = np.zeros(1, np.int64)
        return (
            {name: (lambda obs, e=expert: e.act(obs[None], zero)[0]) for name, expert in experts.items()},
            {"policy": "scripted", "checkpoint": None},
        )
    if not config.checkpoint:
        raise UserError("policy=agent needs checkpoint=<run dir or checkpoint file>")
    from mtrl.agents.factory import load_policy

    loaded = load_policy(config.checkpoint, config.device)
    trained = loaded.task_names
    missing = [t for t in spec.task_names if t not in trained]
    if missing:
        raise UserError(
            f"checkpoint '{loaded.file}' was trained on {', '.join(trained)}; it has no policy for {', '.join(missing)}"
        )
    act = loaded.act_fn(config.deterministic)
    where = f"collection with checkpoint '{loaded.file}'"

    def act_for(task_id: int) -> ActFn:
        ids = np.array([task_id], np.int64)
        return lambda obs: check_actions(act(obs[None].astype(np.float32), ids)[0], where)

    return (
        {name: act_for(trained.index(name)) for name in spec.task_names},
        {"policy": loaded.agent_name, "checkpoint": str(loaded.file), "deterministic": config.deterministic},
    )


def _run_episode(
    env,
    act: ActFn,
    plan: TaskPlan,
    rng: np.random.Generator,
    episode: int,
    reset_seed: int | None,
    horizon: int,
    rows: dict[str, list],
) -> None:
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
        values = {
            "obs": obs,
            "action": action,
            "reward": reward,
            "next_obs": next_obs,
            "terminated": terminated,
            "truncated": truncated,
            "success": float(info.get("success", 0.0)) > 0.5,
            "episode": episode,
            "step": step,
            "goal_index": goal_index,
            **capture_state(env),
        }
        for key, value in values.items():
            rows[key].append(value)
        obs = next_obs
        if terminated or truncated:
            break


def collect_task(
    spec: EnvSpec, plan: TaskPlan, act: ActFn, seed: int, task_index: int, on_episode: Callable[[], None] | None = None
) -> TaskData:
    """Run `plan.episodes` episodes of one task and return them as TaskData (with the MuJoCo states)."""
    name, proto = plan.task, spec.protocol
    env_seed = seed + task_index
    goals = spec.goals[name][: proto.goals_per_task]
    env = make_task_env(name, goals, proto.train_goals, proto.horizon, env_seed, reward_version=spec.reward_version)
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
    return TaskData(
        name=name, **arrays, arm_qpos_index=arm_q, arm_qvel_index=arm_v, goals=goals, source={**asdict(plan)}
    )


def collect(config: CollectConfig) -> Path:
    """Collect the dataset the config describes and write it atomically; returns its path."""
    spec = build_env_spec(dataclasses.asdict(config.env), config.seed)
    plans = plan_tasks(config, spec.task_names)
    acts, policy_info = make_policies(config, spec)
    probe = make_task_env(spec.task_names[0], spec.goals[spec.task_names[0]][:1], "fixed", 1, config.seed)
    obs_dim = int(np.prod(probe.observation_space.shape))
    act_dim = int(np.prod(probe.action_space.shape))
    probe.close()
    collection = {
        **policy_info,
        "seed": config.seed,
        "episodes_per_task": config.episodes_per_task,
        "noise": config.noise,
        "random_fraction": config.random_fraction,
        "per_task": config.per_task,
        "tasks": [asdict(p) for p in plans],
        "command": " ".join(sys.argv[1:]),
    }
    meta = dict(
        benchmark=spec.benchmark,
        task_names=spec.task_names,
        protocol=spec.protocol.to_dict(),
        goal_seed=spec.goal_seed,
        obs_dim=obs_dim,
        act_dim=act_dim,
        collection=collection,
    )
    total = sum(p.episodes for p in plans)
    with (
        DatasetWriter(config.output, overwrite=config.overwrite, **meta) as writer,
        tqdm(total=total, unit="episode", desc="collect", disable=not config.progress, dynamic_ncols=True) as bar,
    ):
        for index, plan in enumerate(plans):
            bar.set_postfix(task=plan.task, refresh=True)
            data = collect_task(spec, plan, acts[plan.task], config.seed, index, on_episode=lambda: bar.update(1))
            data.source.update(policy_info)
            writer.add_task(data)
        path = writer.commit()
    return path


if __name__ == "__main__":  # python -m mtrl.data.collect: the same entry point as collect.py
    from mtrl.cli import hydra_main, run_collect

    hydra_main("collect", run_collect)
