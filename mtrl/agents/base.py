"""What every agent shares, and the small interface the trainers use.

A trainer only calls `act`, `update`, `diagnostics`, `state_dict` / `load_state_dict` and, for
conservative data sharing, `task_q`. An agent computes per-task losses as K-vectors through pure
per-sample functions; one `BalancedObjective` per trained network turns them into gradients with
that network's balancer. To add an algorithm: a module here with an `Agent` subclass and its
`Config` dataclass, a YAML in `configs/agent/`, and a line in `mtrl/agents/registry.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from mtrl import checks
from mtrl.agents.acting import INITS, ActingPolicy, build_network, load_modules  # noqa: F401 (agents import it)
from mtrl.agents.obs_norm import ObsNormalizer
from mtrl.agents.optim import adam_step, clip_norm_, make_adam
from mtrl.agents.policy import LOG_STD_BOUNDS, TanhGaussianPolicy
from mtrl.balancers import Balancer, make
from mtrl.balancers.objective import BalancedObjective, SampleLoss, UpdatePlan, gradients_of
from mtrl.batch import Batch, Counts, equal_count, map_task_chunks
from mtrl.config.schema import EncoderConfig
from mtrl.errors import UserError
from mtrl.networks.backbone import BACKBONES


@dataclass
class AgentConfig:
    """Options every agent has: its networks' sizes and initialisation, the policy's log-std bounds, Adam."""

    name: str = ""
    hidden_sizes: list[int] = field(default_factory=lambda: [400, 400, 400])
    actor_hidden_sizes: list[int] | None = None  # the actor's own widths (BRC: [256, 256]); None: hidden_sizes
    critic_hidden_sizes: list[int] | None = None  # each critic's widths (BRC: [4096] * 3); None: hidden_sizes
    backbone: str = "mlp"  # mlp, or bronet: BRC's residual blocks with layer norm (mtrl/networks/backbone.py)
    init: str = "default"  # default: PyTorch's; xavier: facebookresearch/mtrl's; he_uniform: Meta-World+'s (acting.py)
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    log_std_bounds: str = "clamp"  # clamp, or tanh (facebookresearch/mtrl's smooth map into the bounds)
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8  # PyTorch's; Meta-World+ uses 1e-5
    weight_decay: float = 0.0  # decoupled (AdamW) weight decay of the actor and critic optimisers (BRC: 1e-4)
    clip_grad_norm: float | None = None  # clip each network's gradient to this norm (None: no clipping)

    def __post_init__(self) -> None:
        self.hidden_sizes = checks.sizes("agent.hidden_sizes", self.hidden_sizes)
        for key in ("actor_hidden_sizes", "critic_hidden_sizes"):
            if getattr(self, key) is not None:
                setattr(self, key, checks.sizes(f"agent.{key}", getattr(self, key)))
        self.backbone = checks.choice("agent.backbone", self.backbone, BACKBONES)
        self.init = checks.choice("agent.init", self.init, INITS)
        self.log_std_max = checks.number("agent.log_std_max", self.log_std_max)
        self.log_std_min = checks.number("agent.log_std_min", self.log_std_min, high=self.log_std_max, strict_high=True)
        self.log_std_bounds = checks.choice("agent.log_std_bounds", self.log_std_bounds, LOG_STD_BOUNDS)
        if not isinstance(self.adam_betas, (list, tuple)) or len(self.adam_betas) != 2:
            raise checks.fail("agent.adam_betas", self.adam_betas, "two numbers in [0, 1)")
        self.adam_betas = [checks.number("agent.adam_betas", b, 0, 1, strict_high=True) for b in self.adam_betas]
        self.adam_eps = checks.number("agent.adam_eps", self.adam_eps, 0, strict_low=True)
        self.weight_decay = checks.number("agent.weight_decay", self.weight_decay, 0)
        if self.clip_grad_norm is not None:
            self.clip_grad_norm = checks.number("agent.clip_grad_norm", self.clip_grad_norm, 0, strict_low=True)

    def network_sizes(self, role: str) -> list[int]:
        """The hidden widths of the actor (`role` actor) or of each critic (critic)."""
        own = self.actor_hidden_sizes if role == "actor" else self.critic_hidden_sizes
        return self.hidden_sizes if own is None else own

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encoder_config(spec: EncoderConfig | Mapping[str, Any]) -> EncoderConfig:
    """An EncoderConfig from itself or from a flat mapping {"name": ..., **options}."""
    if isinstance(spec, EncoderConfig):
        return spec
    options = dict(spec)
    return EncoderConfig(options.pop("name"), options)


def apply_module(module: nn.Module, params: dict[str, Tensor] | None, *args: Tensor) -> Any:
    """`module(*args)` with `params` in place of its own parameters, or with its own when `params` is None
    (a direct call: eagerly cheaper than functional_call)."""
    return module(*args) if params is None else functional_call(module, params, args)


class Agent:
    """Base of the agents: networks from encoder configs, the tanh-Gaussian policy, balanced optimisation."""

    name: ClassVar[str] = ""
    mode: ClassVar[str] = "online"  # online (learns while collecting) or offline (from a dataset)
    has_q: ClassVar[bool] = False  # whether task_q exists (conservative data sharing needs it)
    networks: ClassVar[tuple[str, ...]] = ()  # the trained networks, each with its own balancer
    balanced_extras: ClassVar[tuple[str, ...]] = ()  # other parameters `balancer.apply_to` may name (SAC: alpha)
    Config: ClassVar[type[AgentConfig]] = AgentConfig

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        task_names: list[str],
        config: AgentConfig,
        encoder: EncoderConfig | Mapping[str, Any],
        device: torch.device,
        critic_encoder: EncoderConfig | Mapping[str, Any] | None = None,
    ):
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
        self.acting = ActingPolicy(self.policy, device)  # what evaluation and collection load, apart from learning
        self.objectives: dict[str, BalancedObjective] = {}
        self.plan = UpdatePlan()  # eager, equal counts; fixed by `plan_updates` and `compile` when the agent is built
        self.num_updates = 0
        self._update_step = self.update_step  # replaced by `compile`

    # ----- building -----------------------------------------------------------------------------------
    def network(self, encoder: EncoderConfig, in_dim: int, out_dim: int, role: str = "actor") -> nn.Module:
        """A task-conditioned network on this agent's device, initialised by `config.init` (`role`: actor or
        critic, whose output layers he_uniform initialises at different ranges)."""
        config = self.config
        own = config.actor_hidden_sizes if role == "actor" else config.critic_hidden_sizes
        key = "hidden_sizes" if own is None else f"{role}_hidden_sizes"
        sizes = config.network_sizes(role)
        return build_network(
            encoder, in_dim, out_dim, self.task_names, sizes, config.init, self.device, role, config.backbone, key
        )

    def optimizer(
        self, params: Any, lr: float, betas: list[float] | None = None, weight_decay: float | None = None
    ) -> torch.optim.Adam:
        """Adam with the configured betas, epsilon and decoupled weight decay (or the given ones), in the device's
        fastest implementation (mtrl/agents/optim.py)."""
        config = self.config
        decay = config.weight_decay if weight_decay is None else weight_decay
        return make_adam(params, lr, tuple(betas or config.adam_betas), self.device, config.adam_eps, decay)

    def nonnegative_losses(self) -> set[str]:
        """The trained networks whose per-task losses can never be negative (balancers that take logarithms of
        losses may balance only these)."""
        return set()

    def plan_updates(self, plan: UpdatePlan) -> None:
        """Fix how every update runs (mtrl/balancers/objective.py `UpdatePlan`): each objective's layout and
        gradient source, the temperature steps' and Adam's implementation, the rows' layout."""
        self.plan = plan
        for objective in self.objectives.values():
            objective.replan(plan)

    def compile(
        self, mode: str, cuda_graphs: bool = True, backend: str = "inductor", planned_updates: int | None = None
    ) -> None:
        """Compile the update with torch.compile (`mode`: none, default, max or auto; see mtrl/agents/compiled.py),
        re-planning the update as compiled when it is; batches of unequal task counts keep the eager update.

        `cuda_graphs=False` keeps CUDA graphs off; `backend` is torch.compile's (tests use aot_eager);
        `planned_updates`: the run's number of updates, which `auto` weighs on CPU.
        """
        from mtrl.agents.compiled import compile_update

        self._update_step = compile_update(self, mode, cuda_graphs, backend, planned_updates)

    def set_balancers(self, *balancers: Balancer, **by_network: Balancer) -> None:
        """Choose how each network's per-task losses combine: positionally in `networks` order, or by name."""
        chosen = dict(zip(self.networks, balancers), **by_network)
        for net in self.networks:
            balancer = chosen.get(net) or make("uniform", self.num_tasks)
            self.objectives[net] = BalancedObjective(balancer, getattr(self, net), self.num_tasks, plan=self.plan)

    # ----- acting and observation statistics ----------------------------------------------------------
    def act(self, obs: np.ndarray, task_ids: np.ndarray, deterministic: bool) -> np.ndarray:
        """Actions for a batch of observations (one row per env slot), from the acting policy."""
        return self.acting.act(obs, task_ids, deterministic)

    @property
    def obs_normalizer(self) -> ObsNormalizer | None:
        """The observation statistics (offline runs), shared with the acting policy; None: raw observations."""
        return self.acting.obs_normalizer

    def set_obs_normalizer(self, normalizer: ObsNormalizer | None) -> None:
        """Standardise every observation this agent sees from now on (None: use them raw)."""
        self.acting.obs_normalizer = normalizer

    def normalized(self, batch: Batch) -> Batch:
        """The batch with its observations and next observations standardised (unchanged without statistics)."""
        if self.obs_normalizer is None:
            return batch
        return dataclasses.replace(
            batch, obs=self.obs_normalizer(batch.obs), next_obs=self.obs_normalizer(batch.next_obs)
        )

    def normalizer_state(self) -> dict[str, Any]:
        """The observation statistics for a checkpoint (part of the policy: evaluation needs them)."""
        return {} if self.obs_normalizer is None else {"obs_normalizer": self.obs_normalizer.state_dict()}

    def load_normalizer_state(self, state: Mapping[str, Any]) -> None:
        saved = state.get("obs_normalizer")
        self.set_obs_normalizer(None if saved is None else ObsNormalizer.from_state(saved, self.obs_dim, self.device))

    def observe_rewards(
        self, task_ids: np.ndarray, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray
    ) -> None:
        """One training vector step's rewards and episode ends, per env slot (agents that scale rewards by
        statistics of the returns keep them; others ignore them)."""

    # ----- learning -------------------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One update on a task-by-task batch; returns per-task (K,) metrics, logged as <agent name>/<metric>.

        The metrics stay on the device (nothing here reads them back): read them on log steps only.
        """
        if self.plan.equal_counts and equal_count(batch.counts) is None:
            raise ValueError(f"this agent's updates are planned for equal per-task counts; got {list(batch.counts)}")
        metrics = self._update_step(self.normalized(batch.to(self.device)), self.schedule())
        self.num_updates += 1
        return metrics

    def schedule(self) -> tuple[bool, ...]:
        """Which parts of this update run (from Python counters; a compiled update specialises on it)."""
        return ()

    def update_step(self, batch: Batch, schedule: tuple[bool, ...]) -> dict[str, Tensor]:
        """The update proper, a function of tensors and `schedule` only (what `compile` compiles)."""
        raise NotImplementedError

    def loss_terms(self, batch: Batch) -> dict[str, tuple[SampleLoss, dict[str, Tensor]]]:
        """Per trained network: its per-sample loss and that loss's inputs on `batch` (for diagnostics)."""
        raise NotImplementedError

    def step(
        self,
        network: str,
        optim: torch.optim.Adam,
        sample_loss: SampleLoss,
        inputs: dict[str, Tensor],
        counts: Counts,
        clip: bool = True,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Balanced gradients, clipping (`clip_grad_norm`, unless `clip` is off), Adam step, then the balancer's
        post-step update (FAMO)."""
        objective = self.objectives[network]
        grads, losses, aux = objective.gradients(sample_loss, inputs, counts)
        params = objective.parameters()
        grads = [grads[name] for name in params]
        if clip and self.config.clip_grad_norm is not None:
            clip_norm_(grads, self.config.clip_grad_norm, traced=self.plan.compiled)
        adam_step(optim, list(params.values()), grads, traced=self.plan.compiled)
        objective.after_step(sample_loss, inputs, counts, losses)
        return losses, aux

    def map_rows(self, fn: Any, tensors: dict[str, Tensor], counts: Counts) -> Tensor:
        """Row-wise `fn(**tensors)`: on the whole batch when every objective evaluates these counts in the
        `batch` layout, else one task chunk at a time under vmap (mtrl/balancers/objective.py)."""
        if all(objective.batch_layout for objective in self.objectives.values()):
            return fn(**tensors)
        return map_task_chunks(fn, tensors, counts)

    def descend(self, optim: torch.optim.Adam, params: dict[str, Tensor], loss_fn: Any) -> Any:
        """One Adam step on `params` down the scalar of `loss_fn(params) -> (loss, aux)`; returns aux
        (temperatures, Lagrange multipliers: small unbalanced parameters)."""
        grads, aux = gradients_of(loss_fn, params, functional=self.plan.compiled)
        adam_step(optim, list(params.values()), [grads[name] for name in params], traced=self.plan.compiled)
        return aux

    def diagnostics(self, batch: Batch, conflict: bool = True) -> dict[str, dict[str, Any]]:
        """Per network: the balancer's last task weights and, with `conflict`, the per-task gradient conflict on
        `batch` (an extra per-task gradient pass unless the balancer kept its Gram matrix)."""
        stats = {
            net: {"weights": self.objectives[net].last_weights, "extra": self.objectives[net].balancer.diagnostics()}
            for net in self.networks
        }
        if conflict:
            batch = self.normalized(batch.to(self.device))
            for net, (loss, inputs) in self.loss_terms(batch).items():
                stats[net].update(self.objectives[net].conflict_stats(loss, inputs, batch.counts))
        return stats

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
                raise UserError(
                    f"the checkpoint's {net} balancer state does not fit balancer={balancer.name}; "
                    f"resume with the balancer it was trained with"
                ) from None

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any], networks_only: bool = False) -> None:
        raise NotImplementedError
