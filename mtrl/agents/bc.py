"""Multi-task behaviour cloning: the offline baseline that imitates the dataset's actions task by task.

The actor is the same task-conditioned tanh-Gaussian policy as SAC's (same encoders and balancers).
Per sample the loss is the squared error of the deterministic action tanh(mean) to the data action
(`loss=mse`, the common BC baseline, robust to the clipped +-1 actions of scripted experts), or the
negative log-likelihood of the data action under the policy (`loss=nll`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from mtrl import checks
from mtrl.agents.base import Agent, AgentConfig, load_modules
from mtrl.agents.optim import load_adam
from mtrl.balancers.objective import SampleLoss
from mtrl.batch import Batch


@dataclass
class BCConfig(AgentConfig):
    """Behaviour cloning: the actor's learning rate and the imitation loss."""

    name: str = "bc"
    actor_lr: float = 3e-4
    loss: str = "mse"  # mse (deterministic action vs data action) or nll (-log pi(a_data | s))

    def __post_init__(self) -> None:
        super().__post_init__()
        self.actor_lr = checks.number("agent.actor_lr", self.actor_lr, 0, strict_low=True)
        self.loss = checks.choice("agent.loss", self.loss, ("mse", "nll"))


class BCAgent(Agent):
    """An actor trained to reproduce the data's actions, one K-vector of imitation losses per update."""

    name = "bc"
    mode = "offline"
    networks = ("actor",)
    Config = BCConfig
    config: BCConfig

    def nonnegative_losses(self) -> set[str]:
        """The squared action error is >= 0; a negative log-likelihood of a density can be negative."""
        return {"actor"} if self.config.loss == "mse" else set()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.actor_optim = self.optimizer(self.actor.parameters(), self.config.actor_lr)
        self.set_balancers()

    def actor_sample_loss(
        self, params: dict[str, Tensor] | None, obs: Tensor, task_ids: Tensor, action: Tensor
    ) -> Tensor:
        """The imitation loss of one sample: squared action error, or -log pi(a_data | s)."""
        if self.config.loss == "nll":
            return -self.policy.log_prob(params, obs, task_ids, action)
        return (self.policy.mode(params, obs, task_ids) - action).pow(2).sum(-1)

    def loss_terms(self, batch: Batch) -> dict[str, tuple[SampleLoss, dict[str, Tensor]]]:
        return {
            "actor": (self.actor_sample_loss, {"obs": batch.obs, "task_ids": batch.task_ids, "action": batch.action})
        }

    def update_step(self, batch: Batch, schedule: tuple[bool, ...]) -> dict[str, Tensor]:
        """One balanced step of the actor on the imitation losses."""
        loss, inputs = self.loss_terms(batch)["actor"]
        losses, _ = self.step("actor", self.actor_optim, loss, inputs, batch.counts)
        return {"loss": losses}

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "actor": self.actor.state_dict(),
            "actor_optim": self.actor_optim.state_dict(),
            **self.balancer_state(),
            **self.normalizer_state(),
        }

    def load_state_dict(self, state: dict[str, Any], networks_only: bool = False) -> None:
        load_modules({"actor": self.actor}, state)
        self.load_normalizer_state(state)
        if not networks_only:
            load_adam(self.actor_optim, state["actor_optim"])
            self.load_balancer_state(state)
