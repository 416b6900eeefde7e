"""The acting policy: what evaluation, collection and videos load, apart from the learning agent.

It holds only what acting needs — the actor network, the tanh-Gaussian head, the observation statistics —
and moves observations and task ids to its device without per-call overhead (task ids are copied only when
they change; observations go through one reused host buffer, pinned for CUDA). A learning agent owns one and acts
through it; `from_checkpoint` builds one from a checkpoint's actor weights alone (no critics, no optimisers).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Hashable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from mtrl.agents.compiled import PrecompiledGraphs
from mtrl.agents.obs_norm import ObsNormalizer
from mtrl.agents.policy import TanhGaussianPolicy
from mtrl.config.schema import EncoderConfig
from mtrl.errors import UserError
from mtrl.networks import make_network

INITS = ("default", "xavier", "he_uniform", "orthogonal")
#: he_uniform's output-layer ranges by network role: U(-b, b) weights and biases
#: (Meta-World+, rl/networks.py:34-40,226-228).
HEAD_BOUNDS = {"actor": 1e-3, "critic": 3e-3}
#: orthogonal's gains: sqrt(2) for every layer, 1 for the actor's log-std rows (BRC, jaxrl/networks.py:6-7,132-133).
ORTHOGONAL_GAIN, LOG_STD_GAIN = math.sqrt(2.0), 1.0


def linear_layers(module: nn.Module) -> list[tuple[Tensor, Tensor | None]]:
    """(weight, bias) of every linear layer in `module`, in module order: nn.Linear and the per-task and parallel
    linears (weights (..., out, in))."""
    from mtrl.networks.blocks import ParallelLinear, TaskLinear

    kinds = (nn.Linear, TaskLinear, ParallelLinear)
    return [(sub.weight, sub.bias) for sub in module.modules() if isinstance(sub, kinds)]


@torch.no_grad()
def initialise(module: nn.Module, scheme: str, head_bound: float | None = None, log_std_rows: bool = False) -> None:
    """Re-initialise the linear layers of `module`.

    xavier: Xavier-uniform nn.Linear weights, zero biases (facebookresearch/mtrl). he_uniform: every linear
    layer's weights U(+-sqrt(6 / fan_in)), zero biases, and the output layer (the last linear layer) U(+-head_bound)
    in weights and biases when `head_bound` is given (Meta-World+). orthogonal: every linear layer's (per-task,
    parallel: each slice's) weights orthogonal with gain sqrt(2), zero biases, and for the actor (`log_std_rows`
    True) the output layer's second half, the log-std rows, orthogonal apart with gain 1 (BRC).
    """
    if scheme == "xavier":
        for sub in module.modules():
            if isinstance(sub, nn.Linear):
                nn.init.xavier_uniform_(sub.weight)
                if sub.bias is not None:
                    nn.init.zeros_(sub.bias)
    elif scheme == "he_uniform":
        layers = linear_layers(module)
        for weight, bias in layers:
            bound = math.sqrt(6.0 / weight.shape[-1])
            weight.uniform_(-bound, bound)
            if bias is not None:
                bias.zero_()
        if layers and head_bound is not None:
            for tensor in layers[-1]:
                if tensor is not None:
                    tensor.uniform_(-head_bound, head_bound)
    elif scheme == "orthogonal":
        layers = linear_layers(module)
        for weight, bias in layers:
            for matrix in weight.reshape(-1, *weight.shape[-2:]):
                nn.init.orthogonal_(matrix, ORTHOGONAL_GAIN)
            if bias is not None:
                bias.zero_()
        if layers and log_std_rows:
            out = layers[-1][0].shape[-2] // 2
            for matrix in layers[-1][0].reshape(-1, *layers[-1][0].shape[-2:]):
                nn.init.orthogonal_(matrix[:out], ORTHOGONAL_GAIN)
                nn.init.orthogonal_(matrix[out:], LOG_STD_GAIN)


def build_network(
    encoder: EncoderConfig,
    in_dim: int,
    out_dim: int,
    task_names: list[str],
    hidden_sizes: list[int],
    init: str,
    device: torch.device,
    role: str = "actor",
    backbone: str = "mlp",
    sizes_key: str = "hidden_sizes",
) -> nn.Module:
    """A task-conditioned network on `device` with `backbone`'s layer stacks, initialised by `init` (`role`, actor
    or critic, picks he_uniform's output range and orthogonal's log-std rows); a value the network refuses is a
    one-line UserError naming its option (`encoder.<option>`, `<net>.encoder_options.<option>` or `agent.<option>`;
    bad widths name `agent.<sizes_key>`, the option they came from)."""
    try:
        net = make_network(
            encoder.name,
            in_dim,
            out_dim,
            len(task_names),
            hidden_sizes,
            task_names=task_names,
            backbone=backbone,
            **encoder.options,
        )
    except UserError:
        raise
    except ValueError as err:
        text = str(err)
        if text.startswith("hidden_sizes"):
            text = f"agent.{sizes_key}{text[len('hidden_sizes') :]}"
        elif text.startswith("backbone"):
            text = f"agent.{text}"
        else:
            text = f"{encoder.key}.{text}"
        raise UserError(f"{text} (encoder={encoder.name})") from None
    initialise(net, init, HEAD_BOUNDS[role], log_std_rows=role == "actor")
    return net.to(device)


def load_modules(modules: Mapping[str, nn.Module], state: Mapping[str, Any]) -> None:
    """Load each module's weights from `state[name]`; a shape or key mismatch is one UserError line."""
    for name, module in modules.items():
        try:
            module.load_state_dict(state[name])
        except (RuntimeError, KeyError) as err:
            lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
            detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(err).__name__
            raise UserError(f"checkpoint networks do not match this config's networks ({name}): {detail}") from None


class ActingPolicy:
    """Actions for observations of given tasks from an actor network (one forward for all env slots)."""

    def __init__(self, policy: TanhGaussianPolicy, device: torch.device):
        self.policy = policy
        self.device = device
        self.obs_normalizer: ObsNormalizer | None = None  # dataset statistics (offline); None: raw observations
        self._obs_buffer: tuple[Tensor, np.ndarray] | None = None  # host staging of observations, its numpy view
        self._task_ids: tuple[tuple, Tensor] | None = None  # the last task ids (dtype, shape, bytes), their device copy
        self._graph_keys: dict[bool, Hashable] = {}  # the precompiled forward's key per deterministic flag
        self._actions: Callable[[Tensor, Tensor, bool], Tensor] = policy.actions

    @property
    def actions(self) -> Callable[[Tensor, Tensor, bool], Tensor]:
        """The forward acting runs: the policy's own, or compiled (`compile_acting`)."""
        return self._actions

    @actions.setter
    def actions(self, fn: Callable[[Tensor, Tensor, bool], Tensor]) -> None:
        self._actions, self._graph_keys = fn, {}

    @property
    def network(self) -> nn.Module:
        return self.policy.network

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any], config: Any, device: torch.device) -> "ActingPolicy":
        """The policy of a checkpoint's state (its `config` the run's TrainConfig): the actor's weights and the
        observation statistics, nothing of the learner."""
        agent, dims = config.agent, state["dims"]
        task_names = list(state["env"]["tasks"])
        network = build_network(
            config.actor_encoder,
            dims["obs"],
            2 * dims["act"],
            task_names,
            agent.network_sizes("actor"),
            "default",
            device,
            backbone=agent.backbone,
        )
        load_modules({"actor": network}, state["agent"])
        acting = cls(TanhGaussianPolicy(network, agent.log_std_min, agent.log_std_max, agent.log_std_bounds), device)
        saved = state["agent"].get("obs_normalizer")
        acting.obs_normalizer = None if saved is None else ObsNormalizer.from_state(saved, dims["obs"], device)
        return acting

    def normalize_obs(self, obs: Tensor) -> Tensor:
        return obs if self.obs_normalizer is None else self.obs_normalizer(obs)

    def act(self, obs: np.ndarray, task_ids: np.ndarray, deterministic: bool) -> np.ndarray:
        """Actions (N, act_dim) for observations (N, obs_dim) of the given task ids (N,)."""
        ids_t = self.device_task_ids(task_ids)
        with torch.inference_mode():
            obs_t = self.device_obs(obs)
            if self.device.type != "cpu":
                return self.actions(self.normalize_obs(obs_t), ids_t, deterministic).cpu().numpy()
            # A batch of one observation per task is latency-bound: one CPU thread avoids OpenMP wake-ups.
            threads = torch.get_num_threads()
            if threads == 1:
                return self.cpu_actions(obs_t, ids_t, deterministic)
            torch.set_num_threads(1)
            try:
                return self.cpu_actions(obs_t, ids_t, deterministic)
            finally:
                torch.set_num_threads(threads)

    def cpu_actions(self, obs: Tensor, task_ids: Tensor, deterministic: bool) -> np.ndarray:
        """Actions on the CPU from this policy's own observation and task-id tensors. Their signatures change only
        when those tensors are replaced, so a precompiled forward's graph key is computed once per replacement."""
        if self.obs_normalizer is not None or not isinstance(self.actions, PrecompiledGraphs):
            return self.actions(self.normalize_obs(obs), task_ids, deterministic).numpy()
        key = self._graph_keys.get(deterministic)
        if key is None:
            key = self._graph_keys[deterministic] = self.actions.key(obs, task_ids, deterministic)
        return self.actions.call(key, obs, task_ids, deterministic).numpy()

    def device_obs(self, obs: np.ndarray) -> Tensor:
        """Observations as float32 on the device through one reused host buffer (pinned for CUDA): a copy into it
        instead of a new tensor per call, and on CUDA an asynchronous copy from it.

        Reusing the buffer is safe because acting reads its actions back before it returns (which on CUDA waits
        for the copy). Call inside inference mode, as `act` does: the buffer is an inference tensor.
        """
        obs = np.asarray(obs)
        if self._obs_buffer is None or self._obs_buffer[0].shape != obs.shape:
            buffer = torch.empty(obs.shape, dtype=torch.float32, pin_memory=self.device.type == "cuda")
            self._obs_buffer = (buffer, buffer.numpy())
            self._graph_keys = {}
        buffer, view = self._obs_buffer
        view[...] = obs
        return buffer if self.device.type == "cpu" else buffer.to(self.device, non_blocking=True)

    def device_task_ids(self, task_ids: np.ndarray) -> Tensor:
        """The task ids on the device, copied only when they change (env slots switch tasks rarely). They are
        compared by dtype, shape and bytes: `np.array_equal` took 12 of a 0.19 ms acting call at 3 x 400."""
        task_ids = np.asarray(task_ids)
        key = (task_ids.dtype, task_ids.shape, task_ids.tobytes())  # a copy: the caller may change its array
        if self._task_ids is None or self._task_ids[0] != key:
            ids = torch.from_numpy(task_ids.astype(np.int64))  # astype copies
            self._task_ids = (key, ids.to(self.device))
            self._graph_keys = {}
        return self._task_ids[1]

    def check_finite(self, where: str) -> None:
        """Refuse non-finite policy weights (a diverged run)."""
        bad = [name for name, p in self.network.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise UserError(
                f"{where} holds non-finite policy weights ({bad[0]}); the run diverged: "
                f"use an earlier checkpoint or retrain with a smaller learning rate"
            )


__all__ = ["ActingPolicy", "build_network", "initialise", "linear_layers", "load_modules", "INITS", "HEAD_BOUNDS"]
