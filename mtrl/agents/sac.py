"""Multi-task SAC: shared tanh-Gaussian actor, twin critics with Polyak targets, one temperature per task.

Every loss is computed per sample by a pure function of the network parameters (so per-task
gradients can be taken with `torch.func`), then averaged within each task to a K-vector. Turning
those K-vectors into parameter gradients is the job of a `BalancedObjective` per network (the
default balancer, `uniform`, is the mean over tasks).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mtrl import balancers
from mtrl.balancers.objective import BalancedObjective
from mtrl.batch import Batch, map_task_chunks
from mtrl.errors import UserError
from mtrl.networks import make_network


@dataclass
class SACConfig:
    """Hyperparameters of multi-task SAC (defaults: the Meta-World MT10/MT50 settings)."""

    hidden_sizes: list[int] = field(default_factory=lambda: [400, 400, 400])
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    init_alpha: float = 1.0
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    target_entropy: float | None = None  # None: -|A|

    def __post_init__(self) -> None:
        for key in ("actor_lr", "critic_lr", "alpha_lr", "gamma", "tau", "init_alpha", "log_std_min", "log_std_max"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"agent.{key}={value!r} is not a number")
        checks = {
            "actor_lr": self.actor_lr > 0, "critic_lr": self.critic_lr > 0, "alpha_lr": self.alpha_lr > 0,
            "gamma": 0 <= self.gamma <= 1, "tau": 0 < self.tau <= 1, "init_alpha": self.init_alpha > 0,
            "log_std_min": self.log_std_min < self.log_std_max,
        }
        allowed = {"gamma": "[0, 1]", "tau": "(0, 1]", "log_std_min": f"< log_std_max ({self.log_std_max})"}
        for key, ok in checks.items():
            if not ok:
                raise UserError(f"agent.{key}={getattr(self, key)} is out of range; allowed: {allowed.get(key, '> 0')}")
        if not self.hidden_sizes or any(int(h) < 1 for h in self.hidden_sizes):
            raise UserError(f"agent.hidden_sizes={list(self.hidden_sizes)} is invalid; give positive layer widths")
        self.hidden_sizes = [int(h) for h in self.hidden_sizes]


class TwinQ(nn.Module):
    """Two independent Q networks over (obs, action) with the same task conditioning."""

    def __init__(self, make: Callable[[], nn.Module]):
        super().__init__()
        self.q1, self.q2 = make(), make()

    def forward(self, obs: torch.Tensor, action: torch.Tensor, task_ids: torch.Tensor):
        x = torch.cat([obs, action], dim=-1)
        return self.q1(x, task_ids).squeeze(-1), self.q2(x, task_ids).squeeze(-1)


class SACAgent:
    """Networks, optimisers and per-task losses of multi-task SAC."""

    def __init__(self, obs_dim: int, act_dim: int, task_names: list[str], config: SACConfig,
                 encoder: dict[str, Any], device: torch.device, critic_encoder: dict[str, Any] | None = None):
        """`encoder` ({"name": ..., **options}) conditions the actor, and the critics unless `critic_encoder` is given."""
        self.config = config
        self.num_tasks = len(task_names)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.device = device

        def net(spec: dict[str, Any], in_dim: int, out_dim: int) -> nn.Module:
            options = {k: v for k, v in spec.items() if k != "name"}
            try:
                return make_network(spec["name"], in_dim, out_dim, self.num_tasks, config.hidden_sizes,
                                    task_names=task_names, **options)
            except ValueError as err:
                raise UserError(f"encoder: {err}") from None

        self.actor = net(encoder, obs_dim, 2 * act_dim).to(device)
        self.critic = TwinQ(lambda: net(critic_encoder or encoder, obs_dim + act_dim, 1)).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.full((self.num_tasks,), math.log(config.init_alpha), device=device, requires_grad=True)
        self.target_entropy = -float(act_dim) if config.target_entropy is None else float(config.target_entropy)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=config.alpha_lr)
        self.set_balancers(balancers.make("uniform", self.num_tasks), balancers.make("uniform", self.num_tasks))

    def set_balancers(self, critic: balancers.Balancer, actor: balancers.Balancer) -> None:
        """Choose how the critic's and the actor's per-task losses are combined into one update."""
        self.critic_objective = BalancedObjective(critic, self.critic, self.num_tasks)
        self.actor_objective = BalancedObjective(actor, self.actor, self.num_tasks)

    # ----- acting -----------------------------------------------------------------------------
    def _policy(self, params: dict[str, torch.Tensor] | None, obs: torch.Tensor, task_ids: torch.Tensor):
        out = self.actor(obs, task_ids) if params is None else functional_call(self.actor, params, (obs, task_ids))
        mean, log_std = out.chunk(2, dim=-1)
        return mean, log_std.clamp(self.config.log_std_min, self.config.log_std_max)

    def sample_action(self, params: dict[str, torch.Tensor] | None, obs: torch.Tensor, task_ids: torch.Tensor,
                      noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised tanh-Gaussian sample and its log-probability, from explicit noise."""
        mean, log_std = self._policy(params, obs, task_ids)
        pre_tanh = mean + log_std.exp() * noise
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log(1 - tanh(u)^2) written stably as 2 (log 2 - u - softplus(-2u)).
        log_prob = log_prob - (2 * (math.log(2.0) - pre_tanh - F.softplus(-2 * pre_tanh))).sum(-1)
        return torch.tanh(pre_tanh), log_prob

    @torch.inference_mode()
    def act(self, obs: np.ndarray, task_ids: np.ndarray, deterministic: bool) -> np.ndarray:
        """Actions for a batch of observations: the tanh of the mean, or a sample."""
        if self.device.type != "cpu":
            return self._act(obs, task_ids, deterministic)
        # A batch of one observation per task is latency-bound: one CPU thread avoids OpenMP wake-ups.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._act(obs, task_ids, deterministic)
        finally:
            torch.set_num_threads(threads)

    def _act(self, obs: np.ndarray, task_ids: np.ndarray, deterministic: bool) -> np.ndarray:
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        tasks_t = torch.as_tensor(task_ids, dtype=torch.long, device=self.device)
        mean, log_std = self._policy(None, obs_t, tasks_t)
        if not deterministic:  # acting needs no log-probability: sample the pre-tanh Gaussian directly
            mean = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(mean).cpu().numpy()

    # ----- per-sample losses (pure functions of parameters, usable with torch.func) ----------
    @torch.no_grad()
    def critic_targets(self, batch: Batch) -> torch.Tensor:
        """Soft Bellman targets y = r + gamma (1 - terminated) (min Q'(s', a') - alpha_task log pi(a'|s'))."""
        def soft_value(next_obs: torch.Tensor, task_ids: torch.Tensor, noise: torch.Tensor,
                       alpha: torch.Tensor) -> torch.Tensor:
            next_action, next_log_prob = self.sample_action(None, next_obs, task_ids, noise)
            q1, q2 = self.critic_target(next_obs, next_action, task_ids)
            return torch.min(q1, q2) - alpha * next_log_prob

        inputs = {"next_obs": batch.next_obs, "task_ids": batch.task_ids,
                  "noise": torch.randn(len(batch), self.act_dim, device=self.device),
                  "alpha": self.log_alpha.exp()[batch.task_ids]}
        value = map_task_chunks(soft_value, inputs, batch.counts)
        return batch.reward + self.config.gamma * (1.0 - batch.terminated) * value

    def critic_sample_loss(self, params: dict[str, torch.Tensor], obs: torch.Tensor, action: torch.Tensor,
                           task_ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Squared TD errors of both critics, per sample."""
        q1, q2 = functional_call(self.critic, params, (obs, action, task_ids))
        return (q1 - target).pow(2) + (q2 - target).pow(2)

    def actor_sample_loss(self, params: dict[str, torch.Tensor], obs: torch.Tensor, task_ids: torch.Tensor,
                          noise: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """alpha_task log pi(a|s) - min Q(s, a) per sample, with the critics frozen; also log pi(a|s)."""
        action, log_prob = self.sample_action(params, obs, task_ids, noise)
        frozen = {k: v.detach() for k, v in self.critic.named_parameters()}
        q1, q2 = functional_call(self.critic, frozen, (obs, action, task_ids))
        return alpha * log_prob - torch.min(q1, q2), {"log_prob": log_prob}

    # ----- the update ---------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One SAC update (critic, actor, temperatures, targets); returns per-task K-vectors of metrics."""
        batch = batch.to(self.device)
        critic_losses, _ = self._step(self.critic_objective, self.critic_optim, self.critic_sample_loss,
                                      self.critic_inputs(batch), batch.counts)
        actor_losses, actor_aux = self._step(self.actor_objective, self.actor_optim, self.actor_sample_loss,
                                             self.actor_inputs(batch), batch.counts)

        # Temperature losses stay per task and unbalanced: each log-alpha only sees its own task. They use
        # the per-task mean log pi(a|s) of the actor loss's forward pass (the actor before its step).
        log_prob = actor_aux["log_prob"]
        present = (batch.counts > 0).to(log_prob)
        alpha_losses = -self.log_alpha * (log_prob + self.target_entropy) * present
        self.alpha_optim.zero_grad(set_to_none=True)
        alpha_losses.sum().backward()
        self.alpha_optim.step()

        self.update_targets()
        return {
            "critic_loss": critic_losses,
            "actor_loss": actor_losses,
            "alpha_loss": alpha_losses.detach(),
            "alpha": self.log_alpha.detach().exp(),
            "entropy": -log_prob,
        }

    def critic_inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Keyword tensors of `critic_sample_loss` for a batch (subclasses add their own, e.g. CQL's)."""
        return {"obs": batch.obs, "action": batch.action, "task_ids": batch.task_ids,
                "target": self.critic_targets(batch)}

    def actor_inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Keyword tensors of `actor_sample_loss`: fresh reparameterisation noise and per-sample temperatures."""
        noise = torch.randn(len(batch), self.act_dim, device=self.device)
        return {"obs": batch.obs, "task_ids": batch.task_ids, "noise": noise,
                "alpha": self.log_alpha.detach().exp()[batch.task_ids]}

    @staticmethod
    def _step(objective: BalancedObjective, optim: torch.optim.Optimizer, sample_loss, inputs: dict,
              counts: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Balanced backward, optimiser step, then the balancer's post-step update (FAMO); (K,) losses and aux."""
        optim.zero_grad(set_to_none=True)
        losses, aux = objective.backward(sample_loss, inputs, counts)
        optim.step()
        objective.after_step(sample_loss, inputs, counts, losses)
        return losses, aux

    def diagnostics(self, batch: Batch) -> dict[str, dict[str, Any]]:
        """Per network: the balancer's last task weights and the per-task gradient conflict on `batch`."""
        batch = batch.to(self.device)
        parts = {"critic": (self.critic_objective, self.critic_sample_loss, self.critic_inputs(batch)),
                 "actor": (self.actor_objective, self.actor_sample_loss, self.actor_inputs(batch))}
        return {name: {"weights": objective.last_weights,
                       **objective.conflict_stats(sample_loss, tensors, batch.counts)}
                for name, (objective, sample_loss, tensors) in parts.items()}

    @torch.no_grad()
    def update_targets(self) -> None:
        """Polyak averaging of the target critics: theta' <- (1 - tau) theta' + tau theta."""
        target = list(self.critic_target.parameters())
        torch._foreach_lerp_(target, list(self.critic.parameters()), self.config.tau)

    # ----- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().cpu(),
            "actor_optim": self.actor_optim.state_dict(),
            "critic_optim": self.critic_optim.state_dict(),
            "alpha_optim": self.alpha_optim.state_dict(),
            "critic_balancer": self.critic_objective.balancer.state_dict(),
            "actor_balancer": self.actor_objective.balancer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], networks_only: bool = False) -> None:
        """Restore networks (and, unless `networks_only`, optimisers); shape mismatches are a UserError."""
        try:
            self.actor.load_state_dict(state["actor"])
            self.critic.load_state_dict(state["critic"])
            self.critic_target.load_state_dict(state["critic_target"])
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            detail = next((line.strip() for line in first[1:] if line.strip()), first[0])
            raise UserError(f"checkpoint networks do not match this config's networks: {detail}") from None
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"].to(self.device))
        if not networks_only:
            self.actor_optim.load_state_dict(state["actor_optim"])
            self.critic_optim.load_state_dict(state["critic_optim"])
            self.alpha_optim.load_state_dict(state["alpha_optim"])
            self.critic_objective.balancer.load_state_dict(state["critic_balancer"])
            self.actor_objective.balancer.load_state_dict(state["actor_balancer"])
