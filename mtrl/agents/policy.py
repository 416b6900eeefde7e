"""The tanh-squashed Gaussian policy every agent acts with: sampling, log-densities and acting.

The actor network outputs (mean, raw log-std) per action dimension. The log-std is bounded to
[log_std_min, log_std_max] either by clamping (`clamp`, this project's default) or, as
facebookresearch/mtrl does, by the smooth map min + (max - min) (tanh(x) + 1) / 2 (`tanh`).
All functions take explicit parameters (or None for the module's own), so they work under
`torch.func` transforms.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

LOG_STD_BOUNDS = ("clamp", "tanh")
Params = Optional[dict[str, Tensor]]


class TanhGaussianPolicy:
    """tanh(N(mean, std)) actions from a task-conditioned network that outputs 2 x act_dim values."""

    def __init__(self, network: nn.Module, log_std_min: float, log_std_max: float, bounds: str = "clamp"):
        self.network = network
        self.log_std_min, self.log_std_max, self.bounds = log_std_min, log_std_max, bounds

    def distribution(self, params: Params, obs: Tensor, task_ids: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, bounded log-std) of the pre-tanh Gaussian."""
        out = self.network(obs, task_ids) if params is None else functional_call(self.network, params, (obs, task_ids))
        mean, log_std = out.chunk(2, dim=-1)
        if self.bounds == "tanh":
            span = self.log_std_max - self.log_std_min
            return mean, self.log_std_min + 0.5 * span * (torch.tanh(log_std) + 1.0)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def sample(self, params: Params, obs: Tensor, task_ids: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """Reparameterised tanh-Gaussian sample and its log-probability, from explicit standard-normal noise."""
        mean, log_std = self.distribution(params, obs, task_ids)
        pre_tanh = mean + log_std.exp() * noise
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log(1 - tanh(u)^2) written stably as 2 (log 2 - u - softplus(-2u)).
        log_prob = log_prob - (2 * (math.log(2.0) - pre_tanh - F.softplus(-2 * pre_tanh))).sum(-1)
        return torch.tanh(pre_tanh), log_prob

    def log_prob(self, params: Params, obs: Tensor, task_ids: Tensor, action: Tensor) -> Tensor:
        """log pi(a | s) of given actions (clipped just inside (-1, 1), where the density is finite)."""
        mean, log_std = self.distribution(params, obs, task_ids)
        clipped = action.clamp(-1.0 + 1e-6, 1.0 - 1e-6)
        z = (torch.atanh(clipped) - mean) / log_std.exp()
        log_prob = (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return log_prob - torch.log1p(-clipped.pow(2)).sum(-1)

    def mode(self, params: Params, obs: Tensor, task_ids: Tensor) -> Tensor:
        """The deterministic action tanh(mean)."""
        return torch.tanh(self.distribution(params, obs, task_ids)[0])

    def actions(self, obs: Tensor, task_ids: Tensor, deterministic: bool) -> Tensor:
        """Actions for a batch of observations: tanh of the mean, or of a sample (no log-probability needed)."""
        mean, log_std = self.distribution(None, obs, task_ids)
        if not deterministic:
            mean = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(mean)

    @torch.inference_mode()
    def act(self, obs: Tensor, task_ids: Tensor, deterministic: bool) -> np.ndarray:
        """`actions` as a host array."""
        return self.actions(obs, task_ids, deterministic).cpu().numpy()
