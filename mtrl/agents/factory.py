"""The one place agents are built: from a run's config, or from a checkpoint (for evaluation, collection, video)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from envs import EnvSpec, build_env_spec
from mtrl import balancers
from mtrl.agents.acting import ActingPolicy
from mtrl.agents.base import Agent
from mtrl.agents.registry import agent_class
from mtrl.balancers.objective import UpdatePlan
from mtrl.config.parse import parse_train
from mtrl.config.schema import BalancerConfig, TrainConfig
from mtrl.errors import UserError
from mtrl.io import checkpoint
from mtrl.runtime import pick_device

PolicyFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def build_balancers(config: BalancerConfig, agent: Agent) -> dict[str, balancers.Balancer]:
    """One balancer per trained network: the configured method where `apply_to` names it, uniform elsewhere; and
    one for each of the agent's other balanced parameters that `apply_to` names (SAC's shared temperature)."""
    k = agent.num_tasks
    balancers.make(config.name, k, **config.options)  # validates the options even where it balances nothing
    balanced = (*agent.networks, *agent.balanced_extras)
    if config.name != "uniform" and not set(config.apply_to) & set(agent.networks):
        raise UserError(
            f"balancer.apply_to={config.apply_to} names no network of agent={agent.name} "
            f"(it trains {', '.join(agent.networks)}); set balancer.apply_to=[{agent.networks[0]}]"
        )
    # A method's default networks may include one this agent lacks (BC has no critic); a temperature is asked for.
    unknown = [part for part in config.apply_to if part not in balanced and part not in ("critic", "actor")]
    if unknown:
        raise UserError(
            f"balancer.apply_to={config.apply_to}: agent={agent.name} has no {unknown[0]} to balance "
            f"(it balances {', '.join(balanced)})"
        )
    check_loss_signs(config, agent, balancers.make(config.name, k, **config.options))
    chosen = {
        net: balancers.make(config.name, k, **config.options)
        if net in config.apply_to
        else balancers.make("uniform", k)
        for net in agent.networks
    }
    extras = {part: balancers.make(config.name, k, **config.options) for part in agent.balanced_extras}
    return {**chosen, **{part: balancer for part, balancer in extras.items() if part in config.apply_to}}


def construct_agent(
    config: TrainConfig, task_names: list[str], obs_dim: int, act_dim: int, device: torch.device
) -> Agent:
    """The agent `config.agent` describes, with its encoders and balancers, on `device` (not compiled)."""
    cls = agent_class(config.agent.name)
    agent = cls(
        obs_dim, act_dim, task_names, config.agent, config.actor_encoder, device, critic_encoder=config.critic_encoder
    )
    agent.set_balancers(**build_balancers(config.balancer, agent))
    pooled = not config.offline_mode and config.batch_sampling == "uniform"
    agent.plan_updates(UpdatePlan(compiled=False, equal_counts=batches_have_equal_counts(config), row_mean=pooled))
    return agent


def batches_have_equal_counts(config: TrainConfig) -> bool:
    """Whether a run's batches always have equal per-task counts: online, no curriculum sets batch shares;
    offline, the sharing mode adds a fixed number of rows per task (none, all) instead of filtering them (cds);
    batches drawn uniformly from the pooled replay (`batch_sampling=uniform`) have random counts."""
    if config.offline_mode:
        return config.offline.sharing in ("none", "all")
    if config.batch_sampling == "uniform":
        return False
    return config.curriculum.name == "none" or config.curriculum.drives == "env"


def check_loss_signs(config: BalancerConfig, agent: Agent, balancer: balancers.Balancer) -> None:
    """Refuse a balancer that needs positive losses on a network whose losses can be negative (no silent shift)."""
    reason = balancer.needs_positive_losses()
    balanced = (*agent.networks, *agent.balanced_extras)
    signed = [net for net in config.apply_to if net in balanced and net not in agent.nonnegative_losses()]
    if reason is None or not signed:
        return
    safe = sorted(agent.nonnegative_losses() & set(agent.networks))
    fix = f"set balancer.apply_to=[{', '.join(safe)}]" if safe else "choose a balancer that accepts signed losses"
    raise UserError(
        f"balancer={balancer.name} needs positive task losses ({reason}), but agent={agent.name}'s {signed[0]} "
        f"loss can be negative; {fix}"
    )


def build_agent(config: TrainConfig, task_names: list[str], obs_dim: int, act_dim: int) -> Agent:
    """The agent `config.agent` describes on `config.device`, its update compiled as `config.compile` says."""
    agent = construct_agent(config, task_names, obs_dim, act_dim, pick_device(config.device))
    agent.compile(config.compile, planned_updates=planned_updates(config, len(task_names)))  # traced lazily
    return agent


def planned_updates(config: TrainConfig, num_tasks: int) -> int:
    """How many updates a run makes: offline its total_steps; online one batch of `updates_per_step` per vector
    step (of `env.slots` or tasks x `env.envs_per_task` envs) after the warm-up."""
    if config.offline_mode:
        return config.total_steps
    vector = config.env.slots or num_tasks * config.env.envs_per_task
    return int(max(config.total_steps - config.warmup_steps, 0) / vector * config.updates_per_step)


@dataclass
class LoadedPolicy:
    """A checkpoint's acting policy with what it was trained on (what evaluation, collection and videos use)."""

    policy: ActingPolicy
    config: TrainConfig
    state: dict[str, Any]
    file: Path

    @property
    def task_names(self) -> list[str]:
        return list(self.state["env"]["tasks"])

    @property
    def agent_name(self) -> str:
        return self.config.agent.name

    def act_fn(self, deterministic: bool = True) -> PolicyFn:
        """obs (N, obs_dim), task ids (N,) -> actions (N, act_dim)."""
        return lambda obs, task_ids: self.policy.act(obs, task_ids, deterministic=deterministic)

    def env_spec(self, protocol: str | None = None) -> EnvSpec:
        """The training env spec (tasks, goals from the saved goal seed), optionally under another protocol."""
        env = {**self.state["config"]["env"], "goal_seed": self.state["env"]["goal_seed"]}
        if protocol is not None:
            env.update(protocol=protocol, horizon=None)
        return build_env_spec(env, self.config.seed)


def load_policy(path: str | Path, device: str = "auto", which: str = "latest") -> LoadedPolicy:
    """The acting policy of a checkpoint file or of a run directory's latest (or best) checkpoint: the actor's
    weights and observation statistics only (no critics, no optimisers); non-finite weights are refused."""
    file, state = checkpoint.load(path, which=which)
    config = parse_train(state["config"])
    policy = ActingPolicy.from_checkpoint(state, config, pick_device(device))
    policy.check_finite(f"checkpoint '{file}'")
    return LoadedPolicy(policy, config, state, file)


def load_agent(path: str | Path, device: str = "auto", which: str = "latest") -> Agent:
    """The whole learning agent of a checkpoint (networks loaded, optimisers fresh), e.g. to inspect its critics."""
    file, state = checkpoint.load(path, which=which)
    config = parse_train(state["config"])
    config.device = device
    agent = build_agent(config, list(state["env"]["tasks"]), state["dims"]["obs"], state["dims"]["act"])
    agent.load_state_dict(state["agent"], networks_only=True)
    agent.acting.check_finite(f"checkpoint '{file}'")
    return agent
