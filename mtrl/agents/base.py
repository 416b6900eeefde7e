"""What every agent shares, and the small interface the trainers use.

A trainer only calls `act`, `update`, `diagnostics`, `state_dict` / `load_state_dict` and, for
conservative data sharing, `task_q`. An agent computes per-task losses as K-vectors through pure
per-sample functions; one `BalancedObjective` per trained network turns them into gradients with
that network's balancer. To add an algorithm: a module here with an `Agent` subclass and its
`Config` dataclass, a YAML in `configs/agent/`, and a line in `mtrl/agents/registry.py`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from mtrl import checks
from mtrl.agents.policy import LOG_STD_BOUNDS, TanhGaussianPolicy
from mtrl.balancers import Balancer, make
from mtrl.balancers.objective import BalancedObjective, SampleLoss
from mtrl.batch import Batch
from mtrl.config.schema import EncoderConfig
from mtrl.errors import UserError
from mtrl.networks import make_network

INITS = ("default", "xavier")


@dataclass
class AgentConfig:
    """Options every agent has: its networks' sizes and initialisation, the policy's log-std bounds, Adam."""

    name: str = ""
    hidden_sizes: list[int] = field(default_factory=lambda: [400, 400, 400])
    init: str = "default"  # default: PyTorch's; xavier: Xavier-uniform weights, zero biases (facebookresearch/mtrl)
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    log_std_bounds: str = "clamp"  # clamp, or tanh (facebookresearch/mtrl's smooth map into the bounds)
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad_norm: float | None = None  # clip each network's gradient to this norm (None: no clipping)

    def __post_init__(self) -> None:
        self.hidden_sizes = checks.sizes("agent.hidden_sizes", self.hidden_sizes)
        self.init = checks.choice("agent.init", self.init, INITS)
        self.log_std_max = checks.number("agent.log_std_max", self.log_std_max)
        self.log_std_min = checks.number("agent.log_std_min", self.log_std_min, high=self.log_std_max,
                                         strict_high=True)
        self.log_std_bounds = checks.choice("agent.log_std_bounds", self.log_std_bounds, LOG_STD_BOUNDS)
        if not isinstance(self.adam_betas, (list, tuple)) or len(self.adam_betas) != 2:
            raise checks.fail("agent.adam_betas", self.adam_betas, "two numbers in [0, 1)")
        self.adam_betas = [checks.number("agent.adam_betas", b, 0, 1, strict_high=True) for b in self.adam_betas]
        if self.clip_grad_norm is not None:
            self.clip_grad_norm = checks.number("agent.clip_grad_norm", self.clip_grad_norm, 0, strict_low=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encoder_config(spec: EncoderConfig | Mapping[str, Any]) -> EncoderConfig:
    """An EncoderConfig from itself or from a flat mapping {"name": ..., **options}."""
    if isinstance(spec, EncoderConfig):
        return spec
    options = dict(spec)
    return EncoderConfig(options.pop("name"), options)


def initialise(module: nn.Module, scheme: str) -> None:
    """Re-initialise the Linear layers of `module` (xavier: Xavier-uniform weights, zero biases)."""
    if scheme == "default":
        return
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.xavier_uniform_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)


class Agent:
    """Base of the agents: networks from encoder configs, the tanh-Gaussian policy, balanced optimisation."""

    name: ClassVar[str] = ""
    mode: ClassVar[str] = "online"  # online (learns while collecting) or offline (from a dataset)
    has_q: ClassVar[bool] = False  # whether task_q exists (conservative data sharing needs it)
    networks: ClassVar[tuple[str, ...]] = ()  # the trained networks, each with its own balancer
    Config: ClassVar[type[AgentConfig]] = AgentConfig

    def __init__(self, obs_dim: int, act_dim: int, task_names: list[str], config: AgentConfig,
                 encoder: EncoderConfig | Mapping[str, Any], device: torch.device,
                 critic_encoder: EncoderConfig | Mapping[str, Any] | None = None):
        """`encoder` conditions the actor, and the critics unless `critic_encoder` is given."""
        self.config = config
        self.task_names = list(task_names)
        self.num_tasks = len(task_names)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.device = device
        self.actor_encoder = encoder_config(encoder)
        self.critic_encoder = encoder_config(critic_encoder or encoder)
        self.actor = self.network(self.actor_encoder, obs_dim, 2 * act_dim)
        self.policy = TanhGaussianPolicy(self.actor, config.log_std_min, config.log_std_max, config.log_std_bounds)
        self.objectives: dict[str, BalancedObjective] = {}

    # ----- building -----------------------------------------------------------------------------------
    def network(self, encoder: EncoderConfig, in_dim: int, out_dim: int) -> nn.Module:
        """A task-conditioned network on this agent's device, initialised by `config.init`."""
        net = make_network(encoder.name, in_dim, out_dim, self.num_tasks, self.config.hidden_sizes,
                           task_names=self.task_names, **encoder.options)
        initialise(net, self.config.init)
        return net.to(self.device)

    def optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        """Adam with the configured betas."""
        return torch.optim.Adam(params, lr=lr, betas=tuple(self.config.adam_betas))

    def set_balancers(self, *balancers: Balancer, **by_network: Balancer) -> None:
        """Choose how each network's per-task losses combine: positionally in `networks` order, or by name."""
        chosen = dict(zip(self.networks, balancers), **by_network)
        for net in self.networks:
            balancer = chosen.get(net) or make("uniform", self.num_tasks)
            self.objectives[net] = BalancedObjective(balancer, getattr(self, net), self.num_tasks)

    # ----- acting ---------------------------------------------------------------------------------------
    def act(self, obs: np.ndarray, task_ids: np.ndarray, deterministic: bool) -> np.ndarray:
        """Actions for a batch of observations (one row per env slot)."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32).to(self.device)
        ids_t = torch.as_tensor(task_ids, dtype=torch.long).to(self.device)
        if self.device.type != "cpu":
            return self.policy.act(obs_t, ids_t, deterministic)
        # A batch of one observation per task is latency-bound: one CPU thread avoids OpenMP wake-ups.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.policy.act(obs_t, ids_t, deterministic)
        finally:
            torch.set_num_threads(threads)

    # ----- learning -------------------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One update on a task-by-task batch; returns per-task (K,) metrics, logged as <agent name>/<metric>."""
        raise NotImplementedError

    def loss_terms(self, batch: Batch) -> dict[str, tuple[SampleLoss, dict[str, Tensor]]]:
        """Per trained network: its per-sample loss and that loss's inputs on `batch` (for diagnostics)."""
        raise NotImplementedError

    def step(self, network: str, optim: torch.optim.Optimizer, sample_loss: SampleLoss, inputs: dict[str, Tensor],
             counts: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Balanced backward, optional clipping, optimiser step, then the balancer's post-step update (FAMO)."""
        objective = self.objectives[network]
        optim.zero_grad(set_to_none=True)
        losses, aux = objective.backward(sample_loss, inputs, counts)
        if self.config.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(objective.module.parameters(), self.config.clip_grad_norm)
        optim.step()
        objective.after_step(sample_loss, inputs, counts, losses)
        return losses, aux

    def diagnostics(self, batch: Batch) -> dict[str, dict[str, Any]]:
        """Per network: the balancer's last task weights and the per-task gradient conflict on `batch`."""
        batch = batch.to(self.device)
        return {net: {"weights": self.objectives[net].last_weights,
                      "extra": self.objectives[net].balancer.diagnostics(),
                      **self.objectives[net].conflict_stats(loss, inputs, batch.counts)}
                for net, (loss, inputs) in self.loss_terms(batch).items()}

    def task_q(self, obs: Tensor, action: Tensor, task_ids: Tensor) -> Tensor:
        """Q of (s, a) for the given tasks (conservative data sharing filters with it)."""
        raise UserError(f"agent={self.name} has no Q function")

    # ----- state ----------------------------------------------------------------------------------------
    def balancer_state(self) -> dict[str, Any]:
        return {f"{net}_balancer": self.objectives[net].balancer.state_dict() for net in self.networks}

    def load_balancer_state(self, state: Mapping[str, Any]) -> None:
        for net in self.networks:
            balancer = self.objectives[net].balancer
            try:
                balancer.load_state_dict(state[f"{net}_balancer"])
            except (UserError, KeyError):
                raise UserError(f"the checkpoint's {net} balancer state does not fit balancer={balancer.name}; "
                                f"resume with the balancer it was trained with") from None

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any], networks_only: bool = False) -> None:
        raise NotImplementedError


def load_modules(modules: Mapping[str, nn.Module], state: Mapping[str, Any]) -> None:
    """Load each module's weights from `state[name]`; a shape or key mismatch is one UserError line."""
    for name, module in modules.items():
        try:
            module.load_state_dict(state[name])
        except (RuntimeError, KeyError) as err:
            lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
            detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(err).__name__
            raise UserError(f"checkpoint networks do not match this config's networks ({name}): {detail}") from None

