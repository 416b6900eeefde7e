"""Training-reward normalisation as facebookresearch/mtrl trains on Meta-World: reward / running std.

facebookresearch/mtrl builds its Meta-World envs with `should_perform_reward_normalization=True`
(mtrl/env/builder.py), which wraps every task env in `NormalizedEnvWrapper(env, normalize_reward=True)`
(facebookresearch/mtenv, mtenv/envs/metaworld/wrappers/normalized_env.py, taken from garage's
normalized_env.py). Its reward statistic, reproduced here, is per env and never reset:

    mean <- (1 - a) * mean + a * r
    var  <- (1 - a) * var  + a * (r - mean)^2     (with the mean just updated)
    r'   =  r / (sqrt(var) + 1e-8)

starting from mean 0 and var 1 with a = 0.001; the statistic is updated with a reward before that reward is
scaled. The mean only enters the variance: the reward is divided, never centred. Observations are not
normalised (mtrl passes only `normalize_reward=True`), and the wrapper's action rescaling is the identity on
Meta-World's [-1, 1] action box, so neither is reproduced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.001  # NormalizedEnvWrapper's reward_alpha default, which mtrl keeps
EPSILON = 1e-8  # added to the standard deviation before dividing


@dataclass
class RewardScale:
    """The running reward statistic of one env (one task): call it with each raw reward, get the scaled one."""

    mean: float = 0.0
    var: float = 1.0
    alpha: float = ALPHA

    def __call__(self, reward: float) -> float:
        """Update the statistic with `reward`, then return `reward / (std + 1e-8)`."""
        self.mean = (1.0 - self.alpha) * self.mean + self.alpha * reward
        deviation = reward - self.mean
        self.var = (1.0 - self.alpha) * self.var + self.alpha * (deviation * deviation)
        return reward / (math.sqrt(self.var) + EPSILON)

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "alpha": self.alpha}

    @classmethod
    def from_state(cls, state: dict[str, float]) -> "RewardScale":
        return cls(float(state["mean"]), float(state["var"]), float(state["alpha"]))
