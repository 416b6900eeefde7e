"""Evaluation from a config: a checkpoint's actor or the scripted experts, printed and written to disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from envs import build_env_spec
from envs.scripted import ScriptedPolicy
from envs.tasks import resolve_tasks
from mtrl import checkpoint, video
from mtrl.errors import UserError
from mtrl.evaluation import EvalResult, evaluate

POLICIES = ("sac", "scripted")


def _env_config(cfg: DictConfig) -> dict[str, Any] | None:
    env = OmegaConf.select(cfg, "env")
    return None if env is None else OmegaConf.to_container(env, resolve=True)


def evaluate_from_config(cfg: DictConfig) -> EvalResult:
    """Resolve policy, tasks and protocol from the config, evaluate, print the table and write JSON/CSV."""
    policy_name = cfg.policy or ("sac" if cfg.checkpoint else None)
    if policy_name not in POLICIES:
        raise UserError(f"policy={cfg.policy} is not allowed; use policy=sac with checkpoint=<run dir>, "
                        f"or policy=scripted with env=<benchmark>")
    if cfg.episodes_per_task is not None and (not isinstance(cfg.episodes_per_task, int) or cfg.episodes_per_task < 1):
        raise UserError(f"episodes_per_task={cfg.episodes_per_task} is not allowed; expected an integer > 0")
    env_cfg = _env_config(cfg)
    if policy_name == "scripted":
        if env_cfg is None:
            raise UserError("policy=scripted needs an environment: add env=mt10 (or env=mt50, env.tasks=[...])")
        if cfg.protocol is not None:
            env_cfg = {**env_cfg, "protocol": cfg.protocol}
        spec = build_env_spec(env_cfg, cfg.seed)
        act = ScriptedPolicy(spec.task_names).act
        output = Path(cfg.output or f"eval_scripted_{spec.benchmark}_{spec.protocol.name}_s{cfg.seed}.json")
    else:
        if cfg.checkpoint is None:
            raise UserError("policy=sac needs checkpoint=<run dir or checkpoint file>")
        act, spec, file = _checkpoint_policy(cfg, env_cfg)
        output = Path(cfg.output or file.with_name(f"{file.stem}_eval_{spec.protocol.name}.json"))
    recorder = video.recorder_from_config(cfg, spec.task_names, output)  # None unless record=true
    env = spec.make(cfg.seed, evaluation=True, render_mode=None if recorder is None else "rgb_array")
    try:
        result = evaluate(act, env, cfg.episodes_per_task or spec.protocol.eval_episodes, cfg.seed, recorder=recorder)
    finally:
        env.close()
        videos = recorder.finish() if recorder is not None else []
    print(result.table())
    json_path, csv_path = result.write(output)
    print(f"wrote {json_path} and {csv_path}")
    for path in videos:
        print(f"wrote {path}")
    return result


def _checkpoint_policy(cfg: DictConfig, env_cfg: dict[str, Any] | None):
    """The checkpoint's actor as a policy, with the env spec it was trained on (protocol may be overridden)."""
    from mtrl.trainer import build_agent

    file, state = checkpoint.load(cfg.checkpoint)
    saved = OmegaConf.create(state["config"])
    env_saved = {**state["config"]["env"], "goal_seed": state["env"]["goal_seed"]}
    if cfg.protocol is not None:
        env_saved.update(protocol=cfg.protocol, horizon=None)
    if env_cfg is not None:
        _, asked = resolve_tasks(env_cfg["tasks"])
        if asked != state["env"]["tasks"]:
            raise UserError(f"checkpoint was trained on tasks {state['env']['tasks']}; env asks for {asked}")
    spec = build_env_spec(env_saved, state["config"]["seed"])
    saved.device = cfg.device
    agent = build_agent(saved, spec, state["dims"]["obs"], state["dims"]["act"])
    agent.load_state_dict(state["agent"], networks_only=True)
    deterministic = bool(cfg.deterministic)
    return (lambda obs, tasks: agent.act(obs, tasks, deterministic=deterministic)), spec, file
