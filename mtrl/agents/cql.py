"""Multi-task CQL (Kumar et al., 2020, CQL(H) on SAC) on the multi-task SAC networks, encoders and balancers.

The critic loss of each sample adds the conservative penalty to both critics' TD errors:

    w_task * sum_{q in (q1, q2)} [ T * logsumexp_k((q(s, a_k) - log mu(a_k)) / T) - q(s, a) ]

over 3N sampled actions a_k with importance weights 1 / mu(a_k): N uniform actions on [-1, 1]^A
(log mu = -A log 2), N actions of the current policy at s and N at s' (their log-probabilities).
The weight is `cql_alpha`, or with `cql_lagrange` `cql_alpha` times a learned per-task multiplier
alpha'_task >= 0 that grows while the task's penalty per critic exceeds `cql_target_gap` (the
authors' `with_lagrange` / `target_action_gap`). `deterministic_backup` drops the entropy term from
the critic target (the authors' default). The sampled actions are drawn once per batch in
`critic_inputs` (with no gradient into the actor), so the per-sample loss stays a pure function of
the critic's parameters and the balancers' `vmap(grad)` path works unchanged. The actor and
temperatures are trained as in SAC, except that the first `bc_updates` updates may train the actor
by behaviour cloning (alpha log pi(a~|s) - log pi(a_data|s), the authors' `policy_eval_start`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mtrl import checks
from mtrl.agents.base import apply_module
from mtrl.agents.optim import load_adam
from mtrl.agents.sac import SACAgent, SACConfig
from mtrl.batch import Batch

#: Upper clamp of the Lagrange multiplier, as the CQL authors clamp alpha'.
MAX_LAGRANGE = 1e6


@dataclass
class CQLConfig(SACConfig):
    """SAC's hyperparameters plus the conservative penalty's."""

    name: str = "cql"
    cql_alpha: float = 20.0  # weight of the penalty (0 = offline SAC); with cql_lagrange, the multiplier's scale
    cql_num_actions: int = 4  # sampled actions per kind (uniform, policy at s, policy at s'); the authors use 10
    cql_temperature: float = 1.0  # temperature of the penalty's logsumexp
    cql_lagrange: bool = False  # learn a per-task multiplier alpha' that holds the penalty near cql_target_gap
    cql_target_gap: float = 10.0  # target penalty per critic under cql_lagrange
    cql_lagrange_lr: float = 3e-4  # Adam learning rate of log alpha'
    deterministic_backup: bool = True  # critic targets without the entropy term
    bc_updates: int = 0  # first updates whose actor loss is behaviour cloning (the authors' policy_eval_start)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.cql_alpha = checks.number("agent.cql_alpha", self.cql_alpha, 0)
        self.cql_num_actions = checks.integer("agent.cql_num_actions", self.cql_num_actions, 1)
        self.cql_temperature = checks.number("agent.cql_temperature", self.cql_temperature, 0, strict_low=True)
        checks.flag("agent.cql_lagrange", self.cql_lagrange)
        self.cql_target_gap = checks.number("agent.cql_target_gap", self.cql_target_gap)
        self.cql_lagrange_lr = checks.number("agent.cql_lagrange_lr", self.cql_lagrange_lr, 0, strict_low=True)
        checks.flag("agent.deterministic_backup", self.deterministic_backup)
        self.bc_updates = checks.integer("agent.bc_updates", self.bc_updates, 0)
        if self.critic_type != "scalar":
            raise checks.fail("agent.critic_type", self.critic_type, "scalar with agent=cql (its penalty is on Q)")
        if self.return_normalization != "none":
            raise checks.fail(
                "agent.return_normalization", self.return_normalization, "none with agent=cql (it sees no episodes)"
            )


class CQLAgent(SACAgent):
    """SAC with the CQL(H) conservative critic penalty; same networks and state as SACAgent."""

    name = "cql"
    mode = "offline"
    Config = CQLConfig
    config: CQLConfig

    def nonnegative_losses(self) -> set[str]:
        """None: the conservative penalty (logsumexp Q - Q on the data) makes the critic's loss signed too."""
        return set()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.log_lagrange = torch.zeros(self.num_tasks, device=self.device, requires_grad=True)
        self.lagrange_optim = self.optimizer([self.log_lagrange], self.config.cql_lagrange_lr, weight_decay=0.0)
        self._scheduled_bc: bool | None = None  # the running update's behaviour-cloning phase (its schedule's)

    @property
    def bc_phase(self) -> bool:
        """Whether the actor clones the data's actions: during the first `bc_updates` updates."""
        return self.num_updates < self.config.bc_updates if self._scheduled_bc is None else self._scheduled_bc

    # ----- inputs: the sampled actions, drawn once per batch ---------------------------------------
    @torch.no_grad()
    def cql_actions(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(B, 3N, A) actions and their (B, 3N) log-densities: uniform, policy at s, policy at s'."""
        b, n, a = len(batch), self.config.cql_num_actions, self.act_dim
        uniform = torch.rand(b, n, a, device=self.device) * 2.0 - 1.0
        uniform_log_density = torch.full((b, n), -a * math.log(2.0), device=self.device)

        def policy_samples(obs: Tensor, task_ids: Tensor, noise: Tensor) -> Tensor:
            """(rows, N, A + 1): N policy actions per observation and their log-probabilities."""
            rows = obs.shape[0]
            ids = task_ids if task_ids.dim() == 0 else task_ids.repeat_interleave(n)
            action, log_prob = self.sample_action(
                None, obs.repeat_interleave(n, dim=0), ids, noise.reshape(rows * n, a)
            )
            return torch.cat([action.view(rows, n, a), log_prob.view(rows, n, 1)], dim=-1)

        sampled, log_probs = [uniform], [uniform_log_density]
        for obs in (batch.obs, batch.next_obs):
            noise = torch.randn(b, n, a, device=self.device)
            out = self.map_rows(policy_samples, {"obs": obs, "task_ids": batch.task_ids, "noise": noise}, batch.counts)
            sampled.append(out[..., :a])
            log_probs.append(out[..., a])
        return torch.cat(sampled, 1), torch.cat(log_probs, 1)

    def penalty_weight(self) -> Tensor:
        """(K,) weight of each task's penalty: cql_alpha, times alpha'_task under cql_lagrange."""
        weight = torch.full((self.num_tasks,), self.config.cql_alpha, device=self.device)
        if self.config.cql_lagrange:
            weight = weight * self.log_lagrange.detach().exp().clamp(0.0, MAX_LAGRANGE)
        return weight

    def critic_inputs(self, batch: Batch) -> dict[str, Tensor]:
        inputs = super().critic_inputs(batch)
        inputs["cql_actions"], inputs["cql_log_density"] = self.cql_actions(batch)
        inputs["cql_weight"] = self.penalty_weight()[batch.task_ids]
        return inputs

    def next_value(self, next_obs: Tensor, task_ids: Tensor, noise: Tensor, alpha: Tensor) -> Tensor:
        """SAC's soft value, or without the entropy term under `deterministic_backup`."""
        return super().next_value(next_obs, task_ids, noise, alpha * (not self.config.deterministic_backup))

    # ----- per-sample loss ------------------------------------------------------------------------------
    def conservative_penalty(
        self,
        params: dict[str, Tensor] | None,
        obs: Tensor,
        task_ids: Tensor,
        cql_actions: Tensor,
        cql_log_density: Tensor,
        q_data: tuple[Tensor, Tensor],
    ) -> Tensor:
        """Per sample: sum over both critics of T logsumexp((Q(s, a_k) - log mu(a_k)) / T) - Q(s, a)."""
        n, m = cql_actions.shape[0], cql_actions.shape[1]
        obs_rep = obs.unsqueeze(1).expand(n, m, obs.shape[-1]).reshape(n * m, obs.shape[-1])
        # Under the balancers' vmap each chunk has one 0-dim task id that covers all of its rows.
        ids = task_ids if task_ids.dim() == 0 else task_ids.repeat_interleave(m)
        s1, s2 = apply_module(self.critic, params, obs_rep, cql_actions.reshape(n * m, -1), ids)
        t = self.config.cql_temperature
        penalty = 0.0
        for sampled, q in zip((s1, s2), q_data):
            scores = (sampled.view(n, m) - cql_log_density) / t
            penalty = penalty + t * torch.logsumexp(scores, dim=1) - q
        return penalty

    def critic_sample_loss(
        self,
        params: dict[str, Tensor] | None,
        obs: Tensor,
        action: Tensor,
        task_ids: Tensor,
        target: Tensor,
        cql_actions: Tensor,
        cql_log_density: Tensor,
        cql_weight: Tensor,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """SAC's squared TD errors of both critics plus the weighted conservative penalty (both summed or averaged
        over the critics, `critic_loss`); also the penalty."""
        q1, q2 = apply_module(self.critic, params, obs, action, task_ids)
        penalty = self.conservative_penalty(params, obs, task_ids, cql_actions, cql_log_density, (q1, q2))
        return self.td_loss(q1, q2, target) + self.critic_scale * cql_weight * penalty, {"penalty": penalty}

    # ----- actor: behaviour cloning during the first bc_updates updates, then SAC's loss -------------
    def actor_inputs(self, batch: Batch) -> dict[str, Tensor]:
        inputs = super().actor_inputs(batch)
        if self.bc_phase:
            inputs["bc_action"] = batch.action
        return inputs

    def action_log_prob(
        self, params: dict[str, Tensor] | None, obs: Tensor, task_ids: Tensor, action: Tensor
    ) -> Tensor:
        """log pi(a | s) of given actions under the tanh-Gaussian policy."""
        return self.policy.log_prob(params, obs, task_ids, action)

    def actor_sample_loss(
        self,
        params: dict[str, Tensor] | None,
        obs: Tensor,
        task_ids: Tensor,
        noise: Tensor,
        alpha: Tensor,
        bc_action: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """SAC's actor loss, or during the BC phase alpha_task log pi(a~|s) - log pi(a_data|s)."""
        if bc_action is None:
            return super().actor_sample_loss(params, obs, task_ids, noise, alpha)
        _, log_prob = self.sample_action(params, obs, task_ids, noise)
        return alpha * log_prob - self.action_log_prob(params, obs, task_ids, bc_action), {"log_prob": log_prob}

    # ----- the update -----------------------------------------------------------------------------------
    def schedule(self) -> tuple[bool, ...]:
        """SAC's schedule plus whether this update is in the behaviour-cloning phase (`bc_updates`)."""
        return (*super().schedule(), self.bc_phase)

    def update_step(self, batch: Batch, schedule: tuple[bool, ...]) -> dict[str, Tensor]:
        """SAC's update with the conservative critic loss, then the Lagrange step (cql_lagrange)."""
        self._scheduled_bc = schedule[-1]  # read through bc_phase: a compiled update must not read num_updates
        metrics = super().update_step(batch, schedule[:-1])
        self._scheduled_bc = None
        if self.config.cql_lagrange:
            # The authors compare cql_alpha times each critic's penalty with the target gap.
            gap = self.config.cql_alpha * metrics["penalty"] / 2.0 - self.config.cql_target_gap

            def lagrange_loss(params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
                loss = -(params["log_lagrange"].exp().clamp(0.0, MAX_LAGRANGE) * gap).sum()
                return loss, loss.detach()

            self.descend(self.lagrange_optim, {"log_lagrange": self.log_lagrange}, lagrange_loss)
        metrics["penalty_weight"] = self.penalty_weight()
        return metrics

    # ----- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "log_lagrange": self.log_lagrange.detach().cpu(),
            "lagrange_optim": self.lagrange_optim.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], networks_only: bool = False) -> None:
        super().load_state_dict(state, networks_only)
        if not networks_only and "log_lagrange" in state:
            with torch.no_grad():
                self.log_lagrange.copy_(state["log_lagrange"].to(self.device))
            load_adam(self.lagrange_optim, state["lagrange_optim"])
