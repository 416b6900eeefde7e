"""MT-SAC's update equals multi-task SAC written out from the paper (Haarnoja et al. 2018, per-task temperatures).

The reference below uses plain modules, `torch.distributions` for the tanh-Gaussian's log-density and
`torch.optim.Adam` with `.backward()`; it starts from the agent's weights and draws the same noise (the
critic target's, then the actor's), so after several updates every weight and temperature must agree.
It guards the update's fast paths (whole-batch losses, explicit-gradient Adam, chunked vmap) against
drifting from the algorithm.
"""

from __future__ import annotations

import copy

import torch
from torch import distributions as D

from tests.test_sac import ACT, K, _agent, _batch

GAMMA, TAU, LR = 0.99, 0.005, 3e-4


class ReferenceSAC:
    """Multi-task SAC with a one-hot task input, twin critics, Polyak targets and one temperature per task."""

    def __init__(self, agent):
        self.actor = copy.deepcopy(agent.actor.mlp)
        self.q1, self.q2 = copy.deepcopy(agent.critic.q1.mlp), copy.deepcopy(agent.critic.q2.mlp)
        self.t1, self.t2 = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.log_alpha = agent.log_alpha.detach().clone().requires_grad_(True)
        self.critic_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=LR)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=LR)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=LR)

    def policy(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tanh(u), u = mean + std * noise, and log pi = log N(u) - sum log(1 - tanh(u)^2) (the paper's eq. 21)."""
        mean, log_std = self.actor(x).chunk(2, -1)
        gaussian = D.Normal(mean, log_std.clamp(-20, 2).exp())
        u = mean + gaussian.scale * noise
        action = torch.tanh(u)
        return action, gaussian.log_prob(u).sum(-1) - torch.log1p(-action.pow(2) + 1e-12).sum(-1)

    def update(self, batch) -> None:
        onehot = torch.nn.functional.one_hot(batch.task_ids, K).float()
        task_mean = lambda v: v.view(K, -1).mean(1)  # noqa: E731 (equal rows per task)
        alpha = self.log_alpha.detach().exp()[batch.task_ids]
        with torch.no_grad():
            next_action, next_log_prob = self.policy(
                torch.cat([batch.next_obs, onehot], -1), torch.randn(len(batch), ACT)
            )
            x = torch.cat([batch.next_obs, next_action, onehot], -1)
            value = torch.min(self.t1(x), self.t2(x)).squeeze(-1) - alpha * next_log_prob
            target = batch.reward + GAMMA * (1 - batch.terminated) * value
        x = torch.cat([batch.obs, batch.action, onehot], -1)
        critic = task_mean((self.q1(x).squeeze(-1) - target).pow(2) + (self.q2(x).squeeze(-1) - target).pow(2))
        self.critic_opt.zero_grad()
        critic.mean().backward()
        self.critic_opt.step()
        action, log_prob = self.policy(torch.cat([batch.obs, onehot], -1), torch.randn(len(batch), ACT))
        x = torch.cat([batch.obs, action, onehot], -1)
        actor = task_mean(alpha * log_prob - torch.min(self.q1(x), self.q2(x)).squeeze(-1))
        self.actor_opt.zero_grad()
        actor.mean().backward()
        self.actor_opt.step()
        temperature = -self.log_alpha * (task_mean(log_prob.detach()) - ACT)
        self.alpha_opt.zero_grad()
        temperature.sum().backward()
        self.alpha_opt.step()
        with torch.no_grad():
            for target_net, net in ((self.t1, self.q1), (self.t2, self.q2)):
                for p_target, p in zip(target_net.parameters(), net.parameters()):
                    p_target.lerp_(p, TAU)


def _flat(*modules) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for m in modules for p in m.parameters()])


def test_update_equals_the_reference_sac():
    """15 updates: Adam's first step is about lr * sign(gradient), so one update alone would hide scale errors."""
    agent = _agent()
    reference = ReferenceSAC(agent)
    for i in range(15):
        batch = _batch()
        torch.manual_seed(100 + i)
        agent.update(batch)
        torch.manual_seed(100 + i)
        reference.update(batch)
    critic_target = agent.critic_target
    torch.testing.assert_close(_flat(agent.actor.mlp), _flat(reference.actor), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        _flat(agent.critic.q1.mlp, agent.critic.q2.mlp), _flat(reference.q1, reference.q2), rtol=1e-4, atol=1e-6
    )
    torch.testing.assert_close(
        _flat(critic_target.q1.mlp, critic_target.q2.mlp), _flat(reference.t1, reference.t2), rtol=1e-4, atol=1e-6
    )
    torch.testing.assert_close(agent.log_alpha.detach(), reference.log_alpha.detach(), rtol=1e-5, atol=1e-7)
