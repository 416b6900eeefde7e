"""Multi-task SAC: shared tanh-Gaussian actor, twin critics with Polyak targets, one temperature per task.

Every loss is computed per sample by a pure function of the network parameters (so per-task
gradients can be taken with `torch.func`), then averaged within each task to a K-vector. Turning
those K-vectors into parameter gradients is the job of a `BalancedObjective` per network (the
default balancer, `uniform`, is the mean over tasks).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from mtrl import checks
from mtrl.agents import categorical
from mtrl.agents.base import Agent, AgentConfig, apply_module, load_modules
from mtrl.agents.critics import TwinQ, share_task_embedding
from mtrl.agents.optim import load_adam
from mtrl.agents.return_norm import ReturnNormalizer
from mtrl.balancers.objective import BalancedObjective, SampleLoss
from mtrl.batch import Batch, equal_count
from mtrl.errors import UserError


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
    critic_loss: str = "sum"  # sum or mean of the twin critics' losses (Meta-World+: mean)
    shared_alpha: bool = False  # one temperature for all tasks (facebookresearch/mtrl's run scripts)
    alpha_loss: str = "log_alpha"  # -log(alpha)(log pi + H), or alpha: alpha(-log pi - H) (facebookresearch/mtrl)
    alpha_betas: list[float] | None = None  # the temperature's Adam betas (BRC: [0.5, 0.999]); None: adam_betas
    critic_type: str = "scalar"  # scalar Q, or categorical: logits over num_atoms values on [v_min, v_max] (BRC)
    num_atoms: int = 101
    v_min: float = -10.0
    v_max: float = 10.0
    return_normalization: str = "none"  # none, or brc: per-task reward scaling by the largest return (return_norm.py)
    shared_task_embedding: bool = False  # the critics share one task embedding, which the actor reads (BRC)

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
        self.critic_loss = checks.choice("agent.critic_loss", self.critic_loss, CRITIC_LOSSES)
        self.shared_alpha = checks.flag("agent.shared_alpha", self.shared_alpha)
        self.alpha_loss = checks.choice("agent.alpha_loss", self.alpha_loss, ALPHA_LOSSES)
        if self.alpha_betas is not None:
            if not isinstance(self.alpha_betas, (list, tuple)) or len(self.alpha_betas) != 2:
                raise checks.fail("agent.alpha_betas", self.alpha_betas, "two numbers in [0, 1)")
            self.alpha_betas = [checks.number("agent.alpha_betas", b, 0, 1, strict_high=True) for b in self.alpha_betas]
        self.critic_type = checks.choice("agent.critic_type", self.critic_type, CRITIC_TYPES)
        self.num_atoms = checks.integer("agent.num_atoms", self.num_atoms, 2)
        self.v_max = checks.number("agent.v_max", self.v_max)
        self.v_min = checks.number("agent.v_min", self.v_min, high=self.v_max, strict_high=True)
        self.return_normalization = checks.choice(
            "agent.return_normalization", self.return_normalization, RETURN_NORMALIZATIONS
        )
        if self.return_normalization == "brc" and self.v_max <= 0:
            raise checks.fail("agent.v_max", self.v_max, "> 0 with agent.return_normalization=brc")
        self.shared_task_embedding = checks.flag("agent.shared_task_embedding", self.shared_task_embedding)


#: How the twin critics' squared TD errors combine: their sum, or their mean (half the sum).
CRITIC_LOSSES = ("sum", "mean")
#: The temperature loss's form; both move log alpha towards target entropy, `alpha` with gradients scaled by alpha.
ALPHA_LOSSES = ("log_alpha", "alpha")
#: What a critic outputs: one Q value, or logits of a distribution over a fixed support (mtrl/agents/categorical.py).
CRITIC_TYPES = ("scalar", "categorical")
#: Reward scaling inside the agent: none, or BRC's per-task scaling by the largest return (mtrl/agents/return_norm.py).
RETURN_NORMALIZATIONS = ("none", "brc")


def temperature_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float, form: str) -> Tensor:
    """The temperature loss of log pi values (detached) at temperatures exp(log_alpha), elementwise.

    log_alpha: -log(alpha) (log pi + H) (SAC v2 as most code writes it, e.g. Meta-World+ mtsac.py:428);
    alpha: alpha (-log pi - H) (facebookresearch/mtrl sac.py:417-420), whose log-alpha gradient is alpha times
    the first's.
    """
    if form == "alpha":
        return log_alpha.exp() * (-log_prob - target_entropy)
    return -log_alpha * (log_prob + target_entropy)


class Temperatures(nn.Module):
    """The SAC temperatures' logarithms: one per task, or one shared by all tasks."""

    def __init__(self, count: int, init_alpha: float, device: torch.device):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full((count,), math.log(init_alpha), device=device))


class SACAgent(Agent):
    """Networks, optimisers and per-task losses of multi-task SAC."""

    name = "sac"
    mode = "online"
    has_q = True
    networks = ("critic", "actor")
    balanced_extras = ("alpha",)  # the shared temperature (agent.shared_alpha), as facebookresearch/mtrl balances it
    Config = SACConfig
    config: SACConfig

    def nonnegative_losses(self) -> set[str]:
        """The critic's loss is a squared TD error; the actor's (alpha log pi - Q) can be negative."""
        return {"critic"}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        config = self.config
        in_dim = self.obs_dim + self.act_dim
        self.categorical = config.critic_type == "categorical"
        out_dim = config.num_atoms if self.categorical else 1
        twins = [self.network(self.critic_encoder, in_dim, out_dim, role="critic") for _ in range(2)]
        self.critic = TwinQ(*twins, scalar=not self.categorical)
        if config.shared_task_embedding:
            share_task_embedding(self.critic, self.actor)
        self.atoms = categorical.support(config.v_min, config.v_max, config.num_atoms, self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.temperature = Temperatures(1 if config.shared_alpha else self.num_tasks, config.init_alpha, self.device)
        self.log_alpha = self.temperature.log_alpha
        self.task_index = torch.arange(self.num_tasks, device=self.device)  # the balanced temperature's rows
        self.ones = torch.ones(self.num_tasks, device=self.device)
        self.unit_counts = [1] * self.num_tasks
        self.target_entropy = -float(self.act_dim) if config.target_entropy is None else float(config.target_entropy)
        self.actor_optim = self.optimizer(self.actor.parameters(), config.actor_lr)
        self.critic_optim = self.optimizer(self.critic.parameters(), config.critic_lr)
        self.alpha_optim = self.optimizer([self.log_alpha], config.alpha_lr, config.alpha_betas, weight_decay=0.0)
        self._polyak = (list(self.critic_target.parameters()), list(self.critic.parameters()))  # (targets, sources)
        self.return_normalizer = (
            ReturnNormalizer(self.num_tasks, config.gamma, config.v_max, self.target_entropy, self.device)
            if config.return_normalization == "brc"
            else None
        )
        self._reward_divisors: Tensor | None = None  # the last batch's (K,) divisors, logged as reward_scale
        self.set_balancers()

    def observe_rewards(
        self, task_ids: np.ndarray, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray
    ) -> None:
        """Episode returns for `return_normalization=brc` (nothing to keep otherwise)."""
        if self.return_normalizer is not None:
            self.return_normalizer.observe(task_ids, rewards, terminated, truncated)

    def normalized(self, batch: Batch) -> Batch:
        """As Agent.normalized; under `return_normalization=brc` also each task's rewards divided by its divisor
        at the current temperatures (kept for the metrics as reward_divisor)."""
        batch = super().normalized(batch)
        if self.return_normalizer is None:
            return batch
        self._reward_divisors = self.return_normalizer.divisors(self.alphas())
        return dataclasses.replace(batch, reward=batch.reward / self._reward_divisors[batch.task_ids])

    def update(self, batch: Batch) -> dict[str, Tensor]:
        metrics = super().update(batch)
        if self._reward_divisors is not None:
            metrics["reward_divisor"] = self._reward_divisors
        return metrics

    def alphas(self) -> Tensor:
        """(K,) the temperature of each task (detached): one shared value repeated under `shared_alpha`."""
        return self.log_alpha.detach().exp().expand(self.num_tasks)

    def td_loss(self, q1: Tensor, q2: Tensor, target: Tensor) -> Tensor:
        """Per sample: the twin critics' squared TD errors (categorical: cross-entropies to the target
        distribution), summed or averaged (`critic_loss`)."""
        if self.categorical:
            return self.critic_scale * (categorical.cross_entropy(q1, target) + categorical.cross_entropy(q2, target))
        return self.critic_scale * ((q1 - target).pow(2) + (q2 - target).pow(2))

    def q_value(self, q1: Tensor, q2: Tensor) -> Tensor:
        """The value the actor maximises: min(Q1, Q2), or a categorical critic's expected value under the twins'
        mean probabilities (BRC)."""
        if self.categorical:
            return categorical.expected_value(categorical.mean_probs(q1, q2), self.atoms)
        return torch.min(q1, q2)

    @property
    def critic_scale(self) -> float:
        """1 (the sum over the twin critics) or 1/2 (their mean)."""
        return 0.5 if self.config.critic_loss == "mean" else 1.0

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

    def next_distribution(
        self, next_obs: Tensor, task_ids: Tensor, noise: Tensor, alpha: Tensor, reward: Tensor, discount: Tensor
    ) -> Tensor:
        """A categorical critic's target: the distribution of r + discount (z - alpha log pi(a'|s')) under the
        target critics' mean probabilities at a' ~ pi(s'), projected onto the support (BRC update.py:28-46)."""
        next_action, next_log_prob = self.sample_action(None, next_obs, task_ids, noise)
        probs = categorical.mean_probs(*self.critic_target(next_obs, next_action, task_ids))
        values = reward[:, None] + discount[:, None] * (self.atoms - (alpha * next_log_prob)[:, None])
        return categorical.project(values, probs, self.config.v_min, self.config.v_max)

    @torch.no_grad()
    def critic_targets(self, batch: Batch) -> Tensor:
        """Soft Bellman targets y = r + gamma (1 - terminated) V'(s') (categorical: the projected target
        distributions, (B, atoms))."""
        inputs = {
            "next_obs": batch.next_obs,
            "task_ids": batch.task_ids,
            "noise": torch.randn(len(batch), self.act_dim, device=self.device),
            "alpha": self.alphas()[batch.task_ids],
        }
        discount = self.config.gamma * (1.0 - batch.terminated)
        if self.categorical:
            inputs.update(reward=batch.reward, discount=discount)
            return self.map_rows(self.next_distribution, inputs, batch.counts)
        value = self.map_rows(self.next_value, inputs, batch.counts)
        return batch.reward + discount * value

    def critic_sample_loss(
        self, params: dict[str, Tensor] | None, obs: Tensor, action: Tensor, task_ids: Tensor, target: Tensor
    ) -> Tensor:
        """Squared TD errors of both critics, per sample (`params` None: the critics' own parameters)."""
        q1, q2 = apply_module(self.critic, params, obs, action, task_ids)
        return self.td_loss(q1, q2, target)

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
        return alpha * log_prob - self.q_value(q1, q2), {"log_prob": log_prob}

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
        return {"obs": batch.obs, "task_ids": batch.task_ids, "noise": noise, "alpha": self.alphas()[batch.task_ids]}

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

    def balancer_state(self) -> dict[str, Any]:
        alpha = {"alpha_balancer": self.objectives["alpha"].balancer.state_dict()} if "alpha" in self.objectives else {}
        return {**super().balancer_state(), **alpha}

    def load_balancer_state(self, state: Mapping[str, Any]) -> None:
        super().load_balancer_state(state)
        if "alpha" in self.objectives:
            self.objectives["alpha"].balancer.load_state_dict(state["alpha_balancer"])

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
        """The actor step, then the temperature step on the actor loss's log-probabilities."""
        actor_losses, actor_aux = self.step(
            "actor", self.actor_optim, self.actor_sample_loss, self.actor_inputs(batch), batch.counts
        )
        # The temperature losses use the per-task mean log pi(a|s) of the actor loss's forward pass (the actor
        # before its step); both forms are linear in log pi, so this equals the per-task mean of per-sample losses.
        log_prob = actor_aux["log_prob"]
        present = None if equal_count(batch.counts) else self.tasks_present(batch)
        balanced = "alpha" in self.objectives and not self.objectives["alpha"].balancer.static
        if balanced:  # the balancer combines the tasks' gradients of the shared temperature (uniform: the mean, below)
            mask = self.ones if present is None else present
            rows = {"log_prob": log_prob, "task_ids": self.task_index, "present": mask}
            alpha_losses, _ = self.step(
                "alpha", self.alpha_optim, self.alpha_sample_loss, rows, self.unit_counts, clip=False
            )
        else:
            loss = self.temperature_losses(log_prob, present, batch.counts)
            alpha_losses = self.descend(self.alpha_optim, {"log_alpha": self.log_alpha}, loss)
        return {"actor_loss": actor_losses, "alpha_loss": alpha_losses, "alpha": self.alphas(), "entropy": -log_prob}

    def temperature_losses(self, log_prob: Tensor, present: Tensor | None, counts: Any) -> Any:
        """The loss function of `descend` for (K,) mean log pi. Per-task temperatures each see their own task (the
        sum of the task losses); one shared temperature sees the mean over the tasks present, or under a
        `row_mean` plan (pooled batches) the mean over the batch's rows, as the source's batch mean."""
        if not self.config.shared_alpha:
            weights = self.ones if present is None else present
        elif self.plan.row_mean:
            weights = self.objectives["critic"].row_shares(counts)
        else:
            weights = (self.ones if present is None else present) / (
                self.num_tasks if present is None else present.sum().clamp(min=1.0)
            )

        def loss(params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            losses = temperature_loss(params["log_alpha"], log_prob, self.target_entropy, self.config.alpha_loss)
            losses = losses if present is None else losses * present
            return (weights * losses).sum(), losses.detach()

        return loss

    def alpha_sample_loss(
        self, params: dict[str, Tensor] | None, log_prob: Tensor, task_ids: Tensor, present: Tensor
    ) -> Tensor:
        """Per task row (the balanced temperature objective): the shared temperature's loss, zero for absent tasks."""
        log_alpha = (self.temperature.log_alpha if params is None else params["log_alpha"]).expand(log_prob.shape)
        return temperature_loss(log_alpha, log_prob, self.target_entropy, self.config.alpha_loss) * present

    def set_balancers(self, *balancers: Any, **by_network: Any) -> None:
        """As Agent.set_balancers; an `alpha` balancer (balancer.apply_to with alpha) also combines the tasks'
        gradients of the shared temperature, as facebookresearch/mtrl's gradient-manipulation agents do."""
        alpha = by_network.pop("alpha", None)
        super().set_balancers(*balancers, **by_network)
        if alpha is not None:
            if not self.config.shared_alpha:
                raise UserError(
                    "balancer.apply_to includes alpha, which needs agent.shared_alpha=true "
                    "(per-task temperatures each see one task: nothing to balance)"
                )
            self.objectives["alpha"] = BalancedObjective(alpha, self.temperature, self.num_tasks, plan=self.plan)

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
        return self.q_value(*self.critic(self.acting.normalize_obs(obs), action, task_ids))

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
            **({} if self.return_normalizer is None else {"return_normalizer": self.return_normalizer.state_dict()}),
        }

    def load_state_dict(self, state: dict[str, Any], networks_only: bool = False) -> None:
        """Restore networks (and, unless `networks_only`, optimisers and balancers); mismatches are a UserError."""
        load_modules({"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target}, state)
        self.load_normalizer_state(state)
        saved = state["log_alpha"]
        if saved.shape != self.log_alpha.shape:
            raise UserError(
                f"the checkpoint has {saved.numel()} temperature(s), this config {self.log_alpha.numel()}; "
                f"resume with the agent.shared_alpha it was trained with"
            )
        with torch.no_grad():
            self.log_alpha.copy_(saved.to(self.device))
        if self.return_normalizer is not None:
            if "return_normalizer" not in state:
                raise UserError(
                    "the checkpoint has no return normaliser; resume with the agent.return_normalization it was "
                    "trained with"
                )
            self.return_normalizer.load_state_dict(state["return_normalizer"])
        if not networks_only:
            load_adam(self.actor_optim, state["actor_optim"])
            load_adam(self.critic_optim, state["critic_optim"])
            load_adam(self.alpha_optim, state["alpha_optim"])
            self.num_updates = int(state.get("num_updates", state.get("cql_updates", 0)))
            self.load_balancer_state(state)
