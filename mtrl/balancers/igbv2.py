"""IGB v2 (Dai et al., UAI 2023): a small SAC agent chooses the task weights on the log-losses, online.

Followed: the authors' code, YanqiDai/IGB4MTL, ``methods/loss_weight_methods.py``
(``ImprovableGapBalancing_v2``), ``methods/SAC_Agent.py`` and ``experiments/*/trainer.py``. Only the
abstract of the paper was at hand, so every choice below is the code's; where this module departs
from the code it says so (epochs become calls, seeded generators, the non-finite guards).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtrl import checks
from mtrl.balancers.base import LossBalancer

#: The authors' SAC constants (their SAC_Agent defaults): discount, Polyak rate, initial temperature,
#: log-std clamp. The target entropy is -K (-action_dim).
DISCOUNT, TAU, INIT_ALPHA, LOG_STD_MIN, LOG_STD_MAX = 0.99, 0.005, 0.2, -20.0, 2.0


def _adam(params: list[Tensor], lr: float) -> torch.optim.Adam:
    """Adam with torch's fused CPU kernel where this torch has one (>= 2.4; a third faster here), else multi-tensor."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:
        return torch.optim.Adam(params, lr=lr, foreach=True)


def _mlp(sizes: Sequence[int], last_activation: bool) -> nn.Sequential:
    """Linear layers with ReLU between them (and after the last one when ``last_activation``)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if last_activation or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class WeightActor(nn.Module):
    """Gaussian policy on R^K squashed to task weights K softmax(u) (sum K), as the authors' actor.

    The log-probability is theirs too: the Gaussian density of u minus the *tanh* change-of-variables
    term sum 2 (log 2 - u - softplus(-2u)), kept from the SAC code they adapted although the squashing
    is a softmax (which has no density on R^K); it enters the entropy bonus and the temperature loss.
    """

    def __init__(self, num_tasks: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.trunk = _mlp([num_tasks, *hidden], last_activation=True)
        self.mean = nn.Linear(hidden[-1], num_tasks)
        self.log_std = nn.Linear(hidden[-1], num_tasks)

    def forward(self, state: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """(weights (B, K) summing to K, log-probabilities (B,)) for u = mean + std * noise."""
        h = self.trunk(state)
        mean, log_std = self.mean(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
        u = mean + log_std.exp() * noise
        gaussian = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        tanh_term = (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return state.shape[-1] * torch.softmax(u, dim=-1), gaussian - tanh_term


class TwinCritic(nn.Module):
    """Two Q networks on (state, weights); the authors' Q_Critic."""

    def __init__(self, num_tasks: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.q1 = _mlp([2 * num_tasks, *hidden, 1], last_activation=False)
        self.q2 = _mlp([2 * num_tasks, *hidden, 1], last_activation=False)

    def forward(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """(Q1, Q2), each (B,)."""
        x = torch.cat([state, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class TransitionBuffer:
    """Ring buffer of (losses, weights, reward, next losses) in float32; uniform sampling from a generator."""

    FIELDS = ("state", "action", "reward", "next_state")

    def __init__(self, capacity: int, num_tasks: int) -> None:
        self.capacity = capacity
        self.state = torch.zeros(capacity, num_tasks)
        self.action = torch.zeros(capacity, num_tasks)
        self.reward = torch.zeros(capacity)
        self.next_state = torch.zeros(capacity, num_tasks)
        self.ptr = self.size = 0

    def add(self, state: Tensor, action: Tensor, reward: float, next_state: Tensor) -> None:
        """Store one transition, overwriting the oldest when full."""
        self.state[self.ptr], self.action[self.ptr], self.next_state[self.ptr] = state, action, next_state
        self.reward[self.ptr] = reward
        self.ptr, self.size = (self.ptr + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        """n transitions drawn uniformly with replacement: (state, action, reward, next_state)."""
        idx = torch.randint(0, self.size, (n,), generator=generator)
        return tuple(getattr(self, name)[idx] for name in self.FIELDS)

    def state_dict(self) -> dict[str, Any]:
        return {"ptr": self.ptr, "size": self.size, **{name: getattr(self, name) for name in self.FIELDS}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.ptr, self.size = int(state["ptr"]), int(state["size"])
        for name in self.FIELDS:
            setattr(self, name, state[name].to(torch.float32).clone())


class IGBv2(LossBalancer):
    """Loss weights w (sum K) on the log-losses, chosen by a SAC agent; coefficients w_i / (K l_i).

    Per call of ``weights(l)`` (one per update, the losses l detached), in the authors' order:

    1. transition: once the base losses l_base are frozen, store (l_prev, w_prev, r, l) with reward
       r = ``reward_scale`` * min_i (l_prev,i - l_i) / l_base,i: the slowest task's shrink of its
       improvable gap since the last call (so successive calls see different batches, as the authors'
       successive mini-batches). ``last_gap_decrease`` holds the K per-task terms, ``last_reward`` r.
    2. SAC training, on calls t >= ``update_after`` with t % ``update_every`` == 0: with
       k = 1 + size / ``buffer_size``, int(``update_every`` k / 2) steps on batches of
       int(``batch_size`` k / 2) (each at least 1).
    3. action: for t < ``random_steps`` w = K softmax(n), n ~ N(0, I); then w sampled (stochastic)
       from the actor with the state l (raw losses, float32).
    4. base: l_base is the mean of the first ``base_step`` calls' losses, as in ``igb``.

    ``weights`` returns w_i / (K l_i) (l clamped to >= ``eps``): the gradient coefficients of
    (1/K) sum_i w_i log l_i, the mean convention of ``igb``; sum_i c_i l_i = 1 for positive losses.
    ``last_weights`` is w (positive, sums to K up to float32 rounding). K = 1 gives g / l.

    SAC (the authors' SAC_Agent): MLPs ``hidden`` (128, 128) with ReLU, twin critics with Polyak
    targets (0.005), discount 0.99, Adam ``lr`` for actor, critics and log-temperature, initial
    temperature 0.2 tuned to the target entropy -K, no terminal states; per step: critic update,
    actor update (critics frozen, the temperature of before this step), temperature update, targets.

    Departures from the authors' code: their schedule is in epochs (base = the mean training loss of
    epoch 1, SAC training from epoch 3, agent weights from epoch 5, ``reward_scale`` = initial /
    current learning rate), here in calls; their random draws use the global RNG, here everything
    (network initialisation, exploration noise, buffer sampling) comes from one generator seeded by
    ``seed`` (None: unseeded), so the main run's random streams are untouched. Transitions with a
    non-finite entry are not stored, and non-finite agent weights fall back to w = 1. One Adam serves
    actor and temperature (the same maths as their two, one backward pass). IGB v2 needs no
    post-step losses: ``needs_after_step`` is False and ``update`` the base no-op.
    """

    name = "igbv2"
    positive_losses = "its weighting agent acts on log-losses"
    default_apply_to = ("critic",)

    def __init__(
        self,
        num_tasks: int,
        *,
        base_step: int = 1000,
        random_steps: int = 5000,
        update_after: int = 3000,
        update_every: int = 50,
        buffer_size: int = 10000,
        batch_size: int = 256,
        lr: float = 3e-4,
        hidden: Sequence[int] = (128, 128),
        reward_scale: float = 1.0,
        eps: float = 1e-8,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__(num_tasks)
        self.base_step = checks.integer("balancer.base_step", base_step, 1)
        self.random_steps = checks.integer("balancer.random_steps", random_steps, 0)
        self.update_after = checks.integer("balancer.update_after", update_after, 0)
        self.update_every = checks.integer("balancer.update_every", update_every, 1)
        self.batch_size = checks.integer("balancer.batch_size", batch_size, 1)
        self.reward_scale = checks.number("balancer.reward_scale", reward_scale, 0.0, strict_low=True)
        self.eps = checks.number("balancer.eps", eps, 0.0, strict_low=True)
        lr = checks.number("balancer.lr", lr, 0.0, strict_low=True)
        hidden = checks.sizes("balancer.hidden", hidden)
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(checks.integer("balancer.seed", seed, 0))
        with torch.random.fork_rng(devices=[]):  # default initialisation, drawn from our own seed
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=self.generator)))
            self.actor, self.critic = WeightActor(num_tasks, hidden), TwinCritic(num_tasks, hidden)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(INIT_ALPHA), requires_grad=True)
        # One Adam for the actor and the log-temperature: Adam is per-parameter, so this equals the authors'
        # two optimisers with the same learning rate, with one backward pass for both losses.
        self.actor_optim = _adam([*self.actor.parameters(), self.log_alpha], lr)
        self.critic_optim = _adam(list(self.critic.parameters()), lr)
        self.buffer = TransitionBuffer(checks.integer("balancer.buffer_size", buffer_size, 1), num_tasks)
        self.calls = 0
        self.loss_sum = torch.zeros(num_tasks, dtype=torch.float64)
        self.prev_losses: Optional[Tensor] = None  # float64 losses of the last call
        self.prev_weights: Optional[Tensor] = None  # float64 w of the last call
        #: For logging: w of the last call (sums to K), its transition's reward and per-task gap decrease.
        self.last_weights: Optional[Tensor] = None
        self.last_reward: Optional[float] = None
        self.last_gap_decrease: Optional[Tensor] = None

    @property
    def base_losses(self) -> Optional[Tensor]:
        """The frozen base losses, or None while they are still being averaged."""
        return self.loss_sum / self.base_step if self.calls >= self.base_step else None

    def weights(self, losses: Tensor) -> Tensor:
        l = self._check_losses(losses)
        self._store_transition(l)
        if self.calls >= self.update_after and self.calls % self.update_every == 0 and self.buffer.size:
            self._train()
        w = self._act(l)
        if self.calls < self.base_step:
            self.loss_sum += l
        self.prev_losses, self.prev_weights, self.last_weights = l, w, w
        self.calls += 1
        coef = w / (self.num_tasks * l.clamp_min(self.eps))
        return coef.to(device=losses.device, dtype=losses.dtype)

    def _store_transition(self, l: Tensor) -> None:
        """Reward the last call's weights by how the improvable gaps shrank since then; store the transition."""
        base = self.base_losses
        if base is None or self.prev_losses is None:
            return
        self.last_gap_decrease = (self.prev_losses - l) / base.clamp_min(self.eps)
        self.last_reward = self.reward_scale * float(self.last_gap_decrease.min())
        state, next_state = self.prev_losses.float(), l.float()
        if math.isfinite(self.last_reward) and torch.isfinite(state).all() and torch.isfinite(next_state).all():
            self.buffer.add(state, self.prev_weights.float(), self.last_reward, next_state)

    def _act(self, l: Tensor) -> Tensor:
        """float64 weights w (sum K): random during the first ``random_steps`` calls, then the actor's sample."""
        if self.calls < self.random_steps:
            u = torch.randn(self.num_tasks, generator=self.generator, dtype=torch.float64)
            return self.num_tasks * torch.softmax(u, dim=0)
        with torch.no_grad():
            w = self.actor(l.float()[None], self._noise(1))[0][0].double()
        return w if torch.isfinite(w).all() else torch.ones(self.num_tasks, dtype=torch.float64)

    def _noise(self, n: int) -> Tensor:
        return torch.randn(n, self.num_tasks, generator=self.generator)

    def _train(self) -> None:
        """The authors' training block: more and larger SAC steps as the buffer fills."""
        k = 1 + self.buffer.size / self.buffer.capacity
        batch = max(1, int(self.batch_size * k / 2))
        for _ in range(max(1, int(self.update_every * k / 2))):
            self._sac_step(*self.buffer.sample(batch, self.generator))

    def _sac_step(self, state: Tensor, action: Tensor, reward: Tensor, next_state: Tensor) -> None:
        """One SAC update of critics, actor, temperature and target critics."""
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_action, next_logp = self.actor(next_state, self._noise(len(state)))
            target = reward + DISCOUNT * (torch.min(*self.critic_target(next_state, next_action)) - alpha * next_logp)
        q1, q2 = self.critic(state, action)
        self.critic_optim.zero_grad(set_to_none=True)
        (F.mse_loss(q1, target) + F.mse_loss(q2, target)).backward()
        self.critic_optim.step()

        self.critic.requires_grad_(False)
        new_action, logp = self.actor(state, self._noise(len(state)))
        actor_loss = (alpha * logp - torch.min(*self.critic(state, new_action))).mean()
        alpha_loss = -(self.log_alpha * (logp.detach() - self.num_tasks)).mean()  # target entropy -K
        self.actor_optim.zero_grad(set_to_none=True)
        (actor_loss + alpha_loss).backward()  # disjoint parameters: each loss gets its own gradient
        self.actor_optim.step()
        self.critic.requires_grad_(True)
        with torch.no_grad():
            torch._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()), TAU)

    _KEYS = (
        "actor",
        "critic",
        "critic_target",
        "log_alpha",
        "actor_optim",
        "critic_optim",
        "buffer",
        "generator",
        "calls",
        "loss_sum",
        "prev_losses",
        "prev_weights",
    )

    def diagnostics(self) -> dict[str, Any]:
        """The agent's last reward and per-task gap decreases, and its log-loss weights (sum K)."""
        return {
            "agent_reward": self.last_reward,
            "gap_decrease": self.last_gap_decrease,
            "log_loss_weight": self.last_weights,
        }

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers, temperature, buffer, generator and schedule (a deep copy)."""
        return copy.deepcopy(
            {
                "actor": self.actor.state_dict(),
                "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(),
                "log_alpha": self.log_alpha.detach(),
                "actor_optim": self.actor_optim.state_dict(),
                "critic_optim": self.critic_optim.state_dict(),
                "buffer": self.buffer.state_dict(),
                "generator": self.generator.get_state(),
                "calls": self.calls,
                "loss_sum": self.loss_sum,
                "prev_losses": self.prev_losses,
                "prev_weights": self.prev_weights,
            }
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._expect_keys(state, self._KEYS)
        state = copy.deepcopy(dict(state))  # optimisers keep references to what they load
        for name in ("actor", "critic", "critic_target", "actor_optim", "critic_optim", "buffer"):
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.generator.set_state(state["generator"])
        self.calls = int(state["calls"])
        self.loss_sum = state["loss_sum"].to(torch.float64)
        self.prev_losses, self.prev_weights = state["prev_losses"], state["prev_weights"]
