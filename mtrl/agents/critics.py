"""SAC's twin critics: two task-conditioned networks over (obs, action), or, for plain MLP critics, both as one
stacked network whose layers are one batched matmul each (half the kernel calls of two networks, the same maths).

`twin_critic` picks the stacked form for the encoders that are a plain MLP over [x, one-hot] or x (`onehot`,
`none`, `agent.backbone=mlp`). It is built from two ordinary networks, so its initial weights are theirs, and its
state dict has their keys (`q1.mlp.layers.i.weight`, ...): checkpoints load either way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mtrl.errors import UserError
from mtrl.networks.blocks import MLP, TaskConditionedNetwork, task_one_hot

#: Encoders whose networks are an MLP over the input (and the task one-hot): their twins can be stacked.
STACKABLE = {"onehot": True, "none": False}  # name -> whether the one-hot is part of the input


class TwinQ(nn.Module):
    """Two independent Q networks over (obs, action) with the same task conditioning: (B,) Q values each, or with
    `scalar` False (a categorical critic) (B, atoms) logits each."""

    def __init__(self, q1: nn.Module, q2: nn.Module, scalar: bool = True):
        super().__init__()
        self.q1, self.q2 = q1, q2
        self.scalar = scalar

    def forward(self, obs: Tensor, action: Tensor, task_ids: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([obs, action], dim=-1)
        q1, q2 = self.q1(x, task_ids), self.q2(x, task_ids)
        return (q1.squeeze(-1), q2.squeeze(-1)) if self.scalar else (q1, q2)


class StackedTwinQ(nn.Module):
    """Twin MLP critics stacked: layer i holds `weight` (2, out, in) and `bias` (2, 1, out), and both critics'
    rows go through it as one `baddbmm`. Same outputs as `TwinQ` of the two networks it was built from."""

    def __init__(self, q1: TaskConditionedNetwork, q2: TaskConditionedNetwork, one_hot: bool, scalar: bool = True):
        super().__init__()
        self.in_dim, self.num_tasks, self.one_hot, self.scalar = q1.in_dim, q1.num_tasks, one_hot, scalar
        self.out_dim = q1.out_dim
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(q1.mlp.layers, q2.mlp.layers):
            self.weights.append(nn.Parameter(torch.stack([a.weight.detach(), b.weight.detach()])))
            self.biases.append(nn.Parameter(torch.stack([a.bias.detach(), b.bias.detach()]).unsqueeze(1)))
        self._register_state_dict_hook(_twin_keys)
        self._register_load_state_dict_pre_hook(_stacked_keys, with_module=True)

    def forward(self, obs: Tensor, action: Tensor, task_ids: Tensor) -> tuple[Tensor, Tensor]:
        parts = [obs, action]
        lead = obs.shape[:-1]
        if self.one_hot:
            ids = task_ids if task_ids.dim() == 0 else task_ids.reshape(-1)
            parts.append(task_one_hot(ids, self.num_tasks, obs.dtype, lead.numel()).reshape(*lead, self.num_tasks))
        x = torch.cat(parts, dim=-1).reshape(1, -1, self.in_dim + (self.num_tasks if self.one_hot else 0))
        h = x.expand(2, -1, -1)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(bias, h, weight.transpose(1, 2))
            if i < last:
                h = torch.relu(h)
        q = h.reshape(2, *lead, self.out_dim)
        return (q[0].squeeze(-1), q[1].squeeze(-1)) if self.scalar else (q[0], q[1])

    def member(self, index: int) -> MLP:
        """Critic `index` (0 or 1) as a plain MLP whose parameters share this network's storage (a live view)."""
        sizes = [w.shape[1] for w in self.weights]
        mlp = MLP(self.weights[0].shape[2], sizes)
        for layer, weight, bias in zip(mlp.layers, self.weights, self.biases):
            layer.weight = nn.Parameter(weight.detach()[index])
            layer.bias = nn.Parameter(bias.detach()[index, 0])
        return mlp


def _twin_keys(module: StackedTwinQ, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """State-dict hook: the stacked parameters saved under the two networks' keys (q1.mlp.layers.i.weight, ...)."""
    for i in range(len(module.weights)):
        weight, bias = state.pop(f"{prefix}weights.{i}"), state.pop(f"{prefix}biases.{i}")
        for j, name in enumerate(("q1", "q2")):
            state[f"{prefix}{name}.mlp.layers.{i}.weight"] = weight[j]
            state[f"{prefix}{name}.mlp.layers.{i}.bias"] = bias[j, 0]


def _stacked_keys(module: StackedTwinQ, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load pre-hook: the two networks' keys stacked into this network's parameters."""
    for i in range(len(module.weights)):
        key = f"{prefix}q1.mlp.layers.{i}.weight"
        if key not in state:
            continue
        pair = [state.pop(f"{prefix}{name}.mlp.layers.{i}.weight") for name in ("q1", "q2")]
        state[f"{prefix}weights.{i}"] = torch.stack(pair)
        pair = [state.pop(f"{prefix}{name}.mlp.layers.{i}.bias") for name in ("q1", "q2")]
        state[f"{prefix}biases.{i}"] = torch.stack(pair).unsqueeze(1)


def twin_critic(q1: nn.Module, q2: nn.Module, encoder: str, backbone: str, scalar: bool) -> nn.Module:
    """The twin critics of two built networks: stacked for plain MLP encoders, else the pair as it is."""
    if encoder in STACKABLE and backbone == "mlp":
        return StackedTwinQ(q1, q2, one_hot=STACKABLE[encoder], scalar=scalar)
    return TwinQ(q1, q2, scalar=scalar)


def stacked_adam_state(saved: dict[str, Any], layers: int) -> dict[str, Any]:
    """A critic Adam state saved for two separate networks (q1's layers' parameters, then q2's) as the stacked
    network's: each pair of moments stacked (biases to (2, 1, out)), in the stacked parameters' order."""
    state, groups = saved["state"], saved["param_groups"]
    count = 2 * layers  # weight and bias per layer, per network
    if len(groups[0]["params"]) != 2 * count:
        return saved
    out = {}
    for index in range(count):  # new order: weights 0..L-1, then biases 0..L-1 (ParameterList order)
        layer, is_bias = index % layers, index >= layers
        first = 2 * layer + int(is_bias)
        pair = (state[first], state[first + count])
        entry = {}
        for key, value in pair[0].items():
            if key == "step":
                entry[key] = value
            else:
                stacked = torch.stack([value, pair[1][key]])
                entry[key] = stacked.unsqueeze(1) if is_bias else stacked
        out[index] = entry
    group = {**groups[0], "params": list(range(count))}
    return {"state": out, "param_groups": [group]}


def share_task_embedding(critic: nn.Module, actor: nn.Module) -> None:
    """BRC's task conditioning: one task embedding table for both critics, which the actor reads as a buffer
    (the same storage: it follows the critics' updates, and the actor's loss does not train it)."""
    nets = (getattr(critic, "q1", None), getattr(critic, "q2", None), actor)
    tables = [getattr(net, "embedding", None) for net in nets]
    if not all(isinstance(t, nn.Parameter) for t in tables) or len({tuple(t.shape) for t in tables}) != 1:
        raise UserError(
            "agent.shared_task_embedding=true needs encoder=embedding (the same dim) for the actor and the critics"
        )
    table = critic.q1.embedding
    critic.q2.embedding = table
    del actor._parameters["embedding"]
    actor.register_buffer("embedding", table.detach())


__all__ = ["TwinQ", "StackedTwinQ", "twin_critic", "share_task_embedding", "stacked_adam_state", "STACKABLE"]
