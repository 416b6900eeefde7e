"""Evaluation from a config: a checkpoint's policy or the scripted experts, printed and written to disk."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from envs import EnvSpec, build_env_spec
from envs.scripted import ScriptedPolicy
from envs.tasks import resolve_tasks
from mtrl.agents.factory import PolicyFn, load_policy
from mtrl.config.schema import EvaluateConfig
from mtrl.errors import UserError
from mtrl.eval import video
from mtrl.eval.evaluation import EvalResult, evaluate
from mtrl.io import mujoco_log
from mtrl.io.checkpoint import config_hash
from mtrl.io.files import check_writable
from mtrl.train.guard import check_actions

Source = dict  # what was evaluated, recorded in the evaluation JSON


def scripted_policy(config: EvaluateConfig) -> tuple[PolicyFn, EnvSpec, Path, Source]:
    """Meta-World's scripted experts on the config's env, and the default output path."""
    if config.env is None:
        raise UserError("policy=scripted needs an environment: add env=mt10 (or env=mt50, env.tasks=[...])")
    env = dataclasses.asdict(config.env)
    if config.protocol is not None:
        env["protocol"] = config.protocol
    spec = build_env_spec(env, config.seed)
    output = Path(config.output or f"eval_scripted_{spec.benchmark}_{spec.protocol.name}_s{config.seed}.json")
    return ScriptedPolicy(spec.task_names).act, spec, output, {"policy": "scripted"}


def checkpoint_policy(config: EvaluateConfig) -> tuple[PolicyFn, EnvSpec, Path, Source]:
    """A checkpoint's policy on the env it was trained on (the protocol may be overridden), the output path, and
    the checkpoint's identity: its absolute path, step and config hash."""
    if config.checkpoint is None:
        raise UserError("policy=agent needs checkpoint=<run dir or checkpoint file>")
    loaded = load_policy(config.checkpoint, config.device, config.which)
    if config.env is not None:
        _, asked = resolve_tasks(config.env.tasks)
        if asked != loaded.task_names:
            raise UserError(f"checkpoint was trained on tasks {loaded.task_names}; env asks for {asked}")
    spec = loaded.env_spec(config.protocol)
    file = loaded.file
    output = Path(config.output or file.with_name(f"{file.stem}_eval_{spec.protocol.name}.json"))
    act, where = loaded.act_fn(config.deterministic), f"evaluation of checkpoint '{file}'"
    source = {
        "policy": "agent",
        "checkpoint": str(file.resolve()),
        "step": int(loaded.state["step"]),
        "config_hash": config_hash(loaded.state["config"]),
    }
    return (lambda obs, task_ids: check_actions(act(obs, task_ids), where)), spec, output, source


def evaluate_from_config(config: EvaluateConfig) -> EvalResult:
    """Resolve policy, tasks and protocol, evaluate, print the table and write JSON/CSV (and videos)."""
    policy = config.policy or ("agent" if config.checkpoint else None)
    if policy is None:
        raise UserError(
            "nothing to evaluate: give checkpoint=<run dir or checkpoint file>, or policy=scripted with env=<benchmark>"
        )
    act, spec, output, source = scripted_policy(config) if policy == "scripted" else checkpoint_policy(config)
    check_writable(output, "output")
    mujoco_log.route(mujoco_log.beside(output))  # MuJoCo's warnings beside the results
    recorder = video.recorder_from_config(config.video, spec.task_names, output)  # None unless record=true
    env = spec.make(config.seed, evaluation=True, render_mode=None if recorder is None else "rgb_array")
    try:
        returns = spec.protocol.name == "mtrl" if config.returns is None else config.returns
        result = evaluate(
            act,
            env,
            config.episodes_per_task or spec.protocol.eval_episodes,
            config.seed,
            recorder=recorder,
            returns=returns,
            progress=config.progress,
        )
    finally:
        env.close()
        videos = recorder.finish() if recorder is not None else []
    result.source = source
    print(result.table())
    json_path, csv_path = result.write(output)
    print(f"wrote {json_path} and {csv_path}")
    for path in videos:
        print(f"wrote {path}")
    return result
