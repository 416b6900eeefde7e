"""Multi-task SAC: shared tanh-Gaussian actor, twin critics with Polyak targets, one temperature per task.

Every loss is computed per sample by a pure function of the network parameters (so per-task
gradients can be taken with `torch.func`), then averaged within each task to a K-vector. Turning
those K-vectors into parameter gradients is the job of a `BalancedObjective` per network (the
default balancer, `uniform`, is the mean over tasks).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mtrl import checks
from mtrl.agents.base import Agent, AgentConfig, apply_module, load_modules
from mtrl.agents.optim import load_adam
from mtrl.balancers.objective import SampleLoss
from mtrl.batch import Batch, equal_count


@dataclass
class SACConfig(AgentConfig):
    """Hyperparameters of multi-task SAC (defaults: the Meta-World MT10/MT50 settings)."""

    name: str = "sac"
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    init_alpha: float = 1.0
    target_entropy: float | None = None  # None: -|A|
    critic_target_every: int = 1  # updates between Polyak updates of the target critics
    actor_update_every: int = 1  # updates between actor and temperature updates

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("actor_lr", "critic_lr", "alpha_lr", "init_alpha"):
            setattr(self, key, checks.number(f"agent.{key}", getattr(self, key), 0, strict_low=True))
        self.gamma = checks.number("agent.gamma", self.gamma, 0, 1)
        self.tau = checks.number("agent.tau", self.tau, 0, 1, strict_low=True)
        if self.target_entropy is not None:
            self.target_entropy = checks.number("agent.target_entropy", self.target_entropy)
        self.critic_target_every = checks.integer("agent.critic_target_every", self.critic_target_every, 1)
        self.actor_update_every = checks.integer("agent.actor_update_every", self.actor_update_every, 1)


class TwinQ(nn.Module):
    """Two independent Q networks over (obs, action) with the same task conditioning."""

    def __init__(self, q1: nn.Module, q2: nn.Module):
        super().__init__()
        self.q1, self.q2 = q1, q2

    def forward(self, obs: Tensor, action: Tensor, task_ids: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([obs, action], dim=-1)
        return self.q1(x, task_ids).squeeze(-1), self.q2(x, task_ids).squeeze(-1)


class SACAgent(Agent):
    """Networks, optimisers and per-task losses of multi-task SAC."""

    name = "sac"
    mode = "online"
    has_q = True
    networks = ("critic", "actor")
    Config = SACConfig
    config: SACConfig

    def nonnegative_losses(self) -> set[str]:
        """The critic's loss is a squared TD error; the actor's (alpha log pi - Q) can be negative."""
        return {"critic"}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        config = self.config
        in_dim = self.obs_dim + self.act_dim
        self.critic = TwinQ(self.network(self.critic_encoder, in_dim, 1), self.network(self.critic_encoder, in_dim, 1))
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.full(
            (self.num_tasks,), math.log(config.init_alpha), device=self.device, requires_grad=True
        )
        self.target_entropy = -float(self.act_dim) if config.target_entropy is None else float(config.target_entropy)
        self.actor_optim = self.optimizer(self.actor.parameters(), config.actor_lr)
        self.critic_optim = self.optimizer(self.critic.parameters(), config.critic_lr)
        self.alpha_optim = self.optimizer([self.log_alpha], config.alpha_lr)
        self._polyak = (list(self.critic_target.parameters()), list(self.critic.parameters()))  # (targets, sources)
        self.set_balancers()

    @property
    def critic_objective(self):
        return self.objectives["critic"]

    @property
    def actor_objective(self):
        return self.objectives["actor"]

    def sample_action(
        self, params: dict[str, Tensor] | None, obs: Tensor, task_ids: Tensor, noise: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Reparameterised tanh-Gaussian sample and its log-probability, from explicit noise."""
        return self.policy.sample(params, obs, task_ids, noise)

    # ----- per-sample losses (pure functions of parameters, usable with torch.func) ----------
    def next_value(self, next_obs: Tensor, task_ids: Tensor, noise: Tensor, alpha: Tensor) -> Tensor:
        """The soft state value min Q'(s', a') - alpha_task log pi(a'|s') of the target critics."""
        next_action, next_log_prob = self.sample_action(None, next_obs, task_ids, noise)
        q1, q2 = self.critic_target(next_obs, next_action, task_ids)
        return torch.min(q1, q2) - alpha * next_log_prob

    @torch.no_grad()
    def critic_targets(self, batch: Batch) -> Tensor:
        """Soft Bellman targets y = r + gamma (1 - terminated) V'(s')."""
        inputs = {
            "next_obs": batch.next_obs,
            "task_ids": batch.task_ids,
            "noise": torch.randn(len(batch), self.act_dim, device=self.device),
            "alpha": self.log_alpha.exp()[batch.task_ids],
        }
        value = self.map_rows(self.next_value, inputs, batch.counts)
        return batch.reward + self.config.gamma * (1.0 - batch.terminated) * value

    def critic_sample_loss(
        self, params: dict[str, Tensor] | None, obs: Tensor, action: Tensor, task_ids: Tensor, target: Tensor
    ) -> Tensor:
        """Squared TD errors of both critics, per sample (`params` None: the critics' own parameters)."""
        q1, q2 = apply_module(self.critic, params, obs, action, task_ids)
        return (q1 - target).pow(2) + (q2 - target).pow(2)

    def actor_sample_loss(
        self, params: dict[str, Tensor] | None, obs: Tensor, task_ids: Tensor, noise: Tensor, alpha: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """alpha_task log pi(a|s) - min Q(s, a) per sample, with the critics frozen; also log pi(a|s).

        `params` None (the actor's own parameters, differentiated by autograd with respect to them only):
        the critics are called as they are; explicit parameters (torch.func): with detached critic weights.
        """
        action, log_prob = self.sample_action(params, obs, task_ids, noise)
        frozen = None if params is None else {k: v.detach() for k, v in self.critic.named_parameters()}
        q1, q2 = apply_module(self.critic, frozen, obs, action, task_ids)
        return alpha * log_prob - torch.min(q1, q2), {"log_prob": log_prob}

    def critic_inputs(self, batch: Batch) -> dict[str, Tensor]:
        """Keyword tensors of `critic_sample_loss` for a batch (subclasses add their own, e.g. CQL's)."""
        return {
            "obs": batch.obs,
            "action": batch.action,
            "task_ids": batch.task_ids,
            "target": self.critic_targets(batch),
        }

    def actor_inputs(self, batch: Batch) -> dict[str, Tensor]:
        """Keyword tensors of `actor_sample_loss`: fresh reparameterisation noise and per-sample temperatures."""
        noise = torch.randn(len(batch), self.act_dim, device=self.device)
        return {
            "obs": batch.obs,
            "task_ids": batch.task_ids,
            "noise": noise,
            "alpha": self.log_alpha.detach().exp()[batch.task_ids],
        }

    def loss_terms(self, batch: Batch) -> dict[str, tuple[SampleLoss, dict[str, Tensor]]]:
        return {
            "critic": (self.critic_sample_loss, self.critic_inputs(batch)),
            "actor": (self.actor_sample_loss, self.actor_inputs(batch)),
        }

    # ----- the update ---------------------------------------------------------------------------
    def schedule(self) -> tuple[bool, bool]:
        """(actor and temperatures due: every `actor_update_every`, targets due: every `critic_target_every`)."""
        return (
            self.num_updates % self.config.actor_update_every == 0,
            self.num_updates % self.config.critic_target_every == 0,
        )

    def update_step(self, batch: Batch, schedule: tuple[bool, ...]) -> dict[str, Tensor]:
        """One SAC update (critic; then actor and temperatures, and the targets, when `schedule` says so);
        returns per-task K-vectors of metrics."""
        actor_due, targets_due = schedule
        critic_losses, critic_aux = self.step(
            "critic", self.critic_optim, self.critic_sample_loss, self.critic_inputs(batch), batch.counts
        )
        metrics = {"critic_loss": critic_losses, **critic_aux}
        if actor_due:
            metrics.update(self.update_actor_and_alpha(batch))
        if targets_due:
            self.update_targets()
        return metrics

    def update_actor_and_alpha(self, batch: Batch) -> dict[str, Tensor]:
        """The actor step, then the per-task temperature step on the actor loss's log-probabilities."""
        actor_losses, actor_aux = self.step(
            "actor", self.actor_optim, self.actor_sample_loss, self.actor_inputs(batch), batch.counts
        )
        # Temperature losses stay per task and unbalanced: each log-alpha only sees its own task. They use
        # the per-task mean log pi(a|s) of the actor loss's forward pass (the actor before its step).
        log_prob = actor_aux["log_prob"]
        present = None if equal_count(batch.counts) else self.tasks_present(batch)

        def temperature_loss(params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            losses = -params["log_alpha"] * (log_prob + self.target_entropy)
            losses = losses if present is None else losses * present
            return losses.sum(), losses.detach()

        alpha_losses = self.descend(self.alpha_optim, {"log_alpha": self.log_alpha}, temperature_loss)
        return {
            "actor_loss": actor_losses,
            "alpha_loss": alpha_losses,
            "alpha": self.log_alpha.detach().exp(),
            "entropy": -log_prob,
        }

    def tasks_present(self, batch: Batch) -> Tensor:
        """(K,) 1.0 for the tasks that have rows in `batch`, else 0.0 (built on the device from the task ids)."""
        return torch.zeros(self.num_tasks, device=self.device).index_fill_(0, batch.task_ids, 1.0)

    @torch.no_grad()
    def update_targets(self) -> None:
        """Polyak averaging of the target critics: theta' <- (1 - tau) theta' + tau theta."""
        torch._foreach_lerp_(*self._polyak, self.config.tau)

    @torch.no_grad()
    def task_q(self, obs: Tensor, action: Tensor, task_ids: Tensor) -> Tensor:
        """min(Q1, Q2) of the current critics."""
        q1, q2 = self.critic(self.acting.normalize_obs(obs), action, task_ids)
        return torch.min(q1, q2)

    # ----- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().cpu(),
            "actor_optim": self.actor_optim.state_dict(),
            "critic_optim": self.critic_optim.state_dict(),
            "alpha_optim": self.alpha_optim.state_dict(),
            "num_updates": self.num_updates,
            **self.balancer_state(),
            **self.normalizer_state(),
        }

    def load_state_dict(self, state: dict[str, Any], networks_only: bool = False) -> None:
        """Restore networks (and, unless `networks_only`, optimisers and balancers); mismatches are a UserError."""
        load_modules({"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target}, state)
        self.load_normalizer_state(state)
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"].to(self.device))
        if not networks_only:
            load_adam(self.actor_optim, state["actor_optim"])
            load_adam(self.critic_optim, state["critic_optim"])
            load_adam(self.alpha_optim, state["alpha_optim"])
            self.num_updates = int(state.get("num_updates", state.get("cql_updates", 0)))
            self.load_balancer_state(state)
