"""Task balancers: turn K per-task losses or gradients into one update of the shared parameters.

``make(name, num_tasks, **options)`` builds one; ``bal.kind`` says what it consumes: "gradient"
methods (pcgrad, cagrad, fairgrad, nashmtl) map the (K, D) per-task gradient matrix to a direction
with ``combine(G)``; "loss" methods (uniform, famo, igb) give loss coefficients with ``weights(losses)``.
"""

from mtrl.balancers.base import Balancer, BalancerError, GradientBalancer, LossBalancer
from mtrl.balancers.cagrad import CAGrad
from mtrl.balancers.fairgrad import FairGrad
from mtrl.balancers.famo import FAMO
from mtrl.balancers.igb import IGB
from mtrl.balancers.nashmtl import NashMTL
from mtrl.balancers.pcgrad import PCGrad
from mtrl.balancers.registry import available, make, options
from mtrl.balancers.stats import gradient_stats
from mtrl.balancers.task_gradients import flatten, per_task_gradients, per_task_gradients_loop, write_direction
from mtrl.balancers.uniform import Uniform

__all__ = [
    "Balancer", "BalancerError", "GradientBalancer", "LossBalancer",
    "CAGrad", "FAMO", "FairGrad", "IGB", "NashMTL", "PCGrad", "Uniform",
    "available", "make", "options", "gradient_stats",
    "flatten", "per_task_gradients", "per_task_gradients_loop", "write_direction",
]
