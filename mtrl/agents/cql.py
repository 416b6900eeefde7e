"""Multi-task CQL (Kumar et al., 2020, CQL(H) on SAC) on the multi-task SAC networks, encoders and balancers.

The critic loss of each sample adds the conservative penalty to both critics' TD errors:

    alpha_cql * sum_{q in (q1, q2)} [ T * logsumexp_k((q(s, a_k) - log mu(a_k)) / T) - q(s, a) ]

over 3N sampled actions a_k with importance weights 1 / mu(a_k): N uniform actions on [-1, 1]^A
(log mu = -A log 2), N actions of the current policy at s and N at s' (their log-probabilities).
The sampled actions are drawn once per batch in `critic_inputs` (with no gradient into the actor),
so the per-sample loss stays a pure function of the critic's parameters and the balancers'
`vmap(grad)` path works unchanged. The actor and temperatures are trained as in SAC, except that
the first `bc_updates` updates may train the actor by behaviour cloning (alpha log pi(a~|s) -
log pi(a_data|s), the authors' `policy_eval_start` option; 0 by default).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.func import functional_call

from mtrl.agents.sac import SACAgent, SACConfig
from mtrl.batch import Batch, map_task_chunks, task_mean
from mtrl.errors import UserError


@dataclass
class CQLConfig:
    """The conservative penalty: weight, sampled actions per kind, logsumexp temperature."""

    alpha: float = 1.0
    num_actions: int = 10
    temperature: float = 1.0
    bc_updates: int = 0  # updates at the start whose actor loss is behaviour cloning (the authors' policy_eval_start)

    def __post_init__(self) -> None:
        checks = (("alpha", self.alpha, 0.0, False), ("temperature", self.temperature, 0.0, True))
        for key, value, low, strict in checks:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or (value <= low if strict else value < low):
                bound = "> 0" if strict else ">= 0"
                raise UserError(f"offline.cql_{key}={value} is not allowed; expected a number {bound}")
        if isinstance(self.num_actions, bool) or not isinstance(self.num_actions, int) or self.num_actions < 1:
            raise UserError(f"offline.cql_num_actions={self.num_actions} is not allowed; expected an integer >= 1")
        if isinstance(self.bc_updates, bool) or not isinstance(self.bc_updates, int) or self.bc_updates < 0:
            raise UserError(f"offline.bc_updates={self.bc_updates} is not allowed; expected an integer >= 0")


class CQLAgent(SACAgent):
    """SAC with the CQL(H) conservative critic penalty; same networks and state as SACAgent."""

    def __init__(self, *args: Any, cql: CQLConfig | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.cql = cql or CQLConfig()
        self.num_updates = 0
        self._last_critic_inputs: dict[str, torch.Tensor] | None = None

    # ----- inputs: the sampled actions, drawn once per batch ---------------------------------------
    @torch.no_grad()
    def cql_actions(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3N, A) actions and their (B, 3N) log-densities: uniform, policy at s, policy at s'."""
        b, n, a = len(batch), self.cql.num_actions, self.act_dim
        uniform = torch.rand(b, n, a, device=self.device) * 2.0 - 1.0
        uniform_log_density = torch.full((b, n), -a * math.log(2.0), device=self.device)

        def policy_samples(obs: torch.Tensor, task_ids: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            """(rows, N, A + 1): N policy actions per observation and their log-probabilities."""
            rows = obs.shape[0]
            ids = task_ids if task_ids.dim() == 0 else task_ids.repeat_interleave(n)
            action, log_prob = self.sample_action(None, obs.repeat_interleave(n, dim=0), ids, noise.reshape(rows * n, a))
            return torch.cat([action.view(rows, n, a), log_prob.view(rows, n, 1)], dim=-1)

        sampled, log_probs = [uniform], [uniform_log_density]
        for obs in (batch.obs, batch.next_obs):
            noise = torch.randn(b, n, a, device=self.device)
            out = map_task_chunks(policy_samples, {"obs": obs, "task_ids": batch.task_ids, "noise": noise}, batch.counts)
            sampled.append(out[..., :a])
            log_probs.append(out[..., a])
        return torch.cat(sampled, 1), torch.cat(log_probs, 1)

    def critic_inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        inputs = super().critic_inputs(batch)
        inputs["cql_actions"], inputs["cql_log_density"] = self.cql_actions(batch)
        self._last_critic_inputs = inputs
        return inputs

    # ----- per-sample loss ------------------------------------------------------------------------------
    def conservative_penalty(self, params: dict[str, torch.Tensor], obs: torch.Tensor, action: torch.Tensor,
                             task_ids: torch.Tensor, cql_actions: torch.Tensor, cql_log_density: torch.Tensor,
                             q_data: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Per sample: sum over both critics of T logsumexp((Q(s, a_k) - log mu(a_k)) / T) - Q(s, a)."""
        n, m = cql_actions.shape[0], cql_actions.shape[1]
        obs_rep = obs.unsqueeze(1).expand(n, m, obs.shape[-1]).reshape(n * m, obs.shape[-1])
        # Under the balancers' vmap each chunk has one 0-dim task id that covers all of its rows.
        ids = task_ids if task_ids.dim() == 0 else task_ids.repeat_interleave(m)
        s1, s2 = functional_call(self.critic, params, (obs_rep, cql_actions.reshape(n * m, -1), ids))
        if q_data is None:
            q_data = functional_call(self.critic, params, (obs, action, task_ids))
        t = self.cql.temperature
        penalty = 0.0
        for sampled, q in zip((s1, s2), q_data):
            scores = (sampled.view(n, m) - cql_log_density) / t
            penalty = penalty + t * torch.logsumexp(scores, dim=1) - q
        return penalty

    def critic_sample_loss(self, params: dict[str, torch.Tensor], obs: torch.Tensor, action: torch.Tensor,
                           task_ids: torch.Tensor, target: torch.Tensor, cql_actions: torch.Tensor | None = None,
                           cql_log_density: torch.Tensor | None = None) -> torch.Tensor:
        """SAC's squared TD errors of both critics plus alpha_cql times the conservative penalty, per sample."""
        q1, q2 = functional_call(self.critic, params, (obs, action, task_ids))
        td = (q1 - target).pow(2) + (q2 - target).pow(2)
        if cql_actions is None or self.cql.alpha == 0:
            return td
        penalty = self.conservative_penalty(params, obs, action, task_ids, cql_actions, cql_log_density, (q1, q2))
        return td + self.cql.alpha * penalty

    # ----- actor: behaviour cloning during the first bc_updates updates, then SAC's loss -------------
    def actor_inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        inputs = super().actor_inputs(batch)
        if self.num_updates < self.cql.bc_updates:
            inputs["bc_action"] = batch.action
        return inputs

    def action_log_prob(self, params: dict[str, torch.Tensor] | None, obs: torch.Tensor, task_ids: torch.Tensor,
                        action: torch.Tensor) -> torch.Tensor:
        """log pi(a | s) of given actions under the tanh-Gaussian policy (actions clipped just inside (-1, 1))."""
        mean, log_std = self._policy(params, obs, task_ids)
        clipped = action.clamp(-1.0 + 1e-6, 1.0 - 1e-6)
        pre_tanh = torch.atanh(clipped)
        z = (pre_tanh - mean) / log_std.exp()
        log_prob = (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return log_prob - torch.log1p(-clipped.pow(2)).sum(-1)

    def actor_sample_loss(self, params: dict[str, torch.Tensor], obs: torch.Tensor, task_ids: torch.Tensor,
                          noise: torch.Tensor, alpha: torch.Tensor, bc_action: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """SAC's actor loss, or during the BC phase alpha_task log pi(a~|s) - log pi(a_data|s)."""
        if bc_action is None:
            return super().actor_sample_loss(params, obs, task_ids, noise, alpha)
        _, log_prob = self.sample_action(params, obs, task_ids, noise)
        return alpha * log_prob - self.action_log_prob(params, obs, task_ids, bc_action), {"log_prob": log_prob}

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        metrics = super().update(batch)
        self.num_updates += 1
        return metrics

    # ----- diagnostics ---------------------------------------------------------------------------------
    @torch.no_grad()
    def conservative_q(self, obs: torch.Tensor, action: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """min(Q1, Q2) of the current (conservatively trained) critics: the Q that CDS filters with."""
        q1, q2 = self.critic(obs, action, task_ids)
        return torch.min(q1, q2)

    @torch.no_grad()
    def last_penalty(self) -> torch.Tensor | None:
        """Per-task mean conservative penalty on the last update's batch (with the current critics)."""
        inputs = self._last_critic_inputs
        if inputs is None:
            return None
        params = dict(self.critic.named_parameters())
        penalty = self.conservative_penalty(params, inputs["obs"], inputs["action"], inputs["task_ids"],
                                            inputs["cql_actions"], inputs["cql_log_density"])
        return task_mean(penalty, inputs["task_ids"], self.num_tasks)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "cql": asdict(self.cql), "cql_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any], networks_only: bool = False) -> None:
        super().load_state_dict(state, networks_only)
        if not networks_only:
            self.num_updates = int(state.get("cql_updates", 0))


__all__ = ["CQLAgent", "CQLConfig", "SACConfig"]
