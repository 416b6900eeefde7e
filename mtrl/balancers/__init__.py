"""Task balancers: turn K per-task losses or gradients into one update of the shared parameters.

``make(name, num_tasks, **options)`` builds one; ``bal.kind`` says what it consumes: "gradient"
methods (pcgrad, cagrad, fairgrad, nashmtl, mgda, paretomtl) map the (K, D) per-task gradient matrix to a direction
with ``combine(G)``; "loss" methods (uniform, famo, igb, igbv2) give loss coefficients with ``weights(losses)``.
``make(gradient_name, K, loss_weighting=loss_name)`` composes the two (:class:`Composed`).
"""

from mtrl.balancers.affinity import AffinityAccumulator, lookahead_affinity
from mtrl.balancers.base import Balancer, BalancerError, GradientBalancer, LossBalancer
from mtrl.balancers.cagrad import CAGrad
from mtrl.balancers.composed import Composed
from mtrl.balancers.fairgrad import FairGrad
from mtrl.balancers.famo import FAMO
from mtrl.balancers.igb import IGB
from mtrl.balancers.igbv2 import IGBv2
from mtrl.balancers.mgda import MGDA
from mtrl.balancers.nashmtl import NashMTL
from mtrl.balancers.paretomtl import ParetoMTL, preference_vectors
from mtrl.balancers.pcgrad import PCGrad
from mtrl.balancers.registry import available, make, options
from mtrl.balancers.stats import gradient_stats
from mtrl.balancers.task_gradients import flatten, per_task_gradients, per_task_gradients_loop, write_direction
from mtrl.balancers.uniform import Uniform

__all__ = [
    "Balancer",
    "BalancerError",
    "GradientBalancer",
    "LossBalancer",
    "CAGrad",
    "Composed",
    "FAMO",
    "FairGrad",
    "IGB",
    "IGBv2",
    "MGDA",
    "NashMTL",
    "ParetoMTL",
    "PCGrad",
    "Uniform",
    "preference_vectors",
    "AffinityAccumulator",
    "lookahead_affinity",
    "available",
    "make",
    "options",
    "gradient_stats",
    "flatten",
    "per_task_gradients",
    "per_task_gradients_loop",
    "write_direction",
]
