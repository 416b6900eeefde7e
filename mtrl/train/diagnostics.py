"""Optional measurements a run can switch on: the inter-task lookahead affinity (TAG, `diagnostics.affinity_every`).

Every `affinity_every` updates the monitor measures, on the update's batch, Z_ij = 1 - L_j(theta - lr g_i) /
L_j(theta) for each trained network (lr: that network's learning rate), accumulates it, writes the running
mean to `<run_dir>/affinity.npz` at log steps (what `python -m mtrl.grouping <run dir>` reads) and logs the
last matrix as numbers and as a TensorBoard image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtrl.agents.base import Agent
from mtrl.balancers.affinity import AffinityAccumulator, lookahead_affinity
from mtrl.batch import Batch


class AffinityMonitor:
    """Measures, accumulates, saves and logs the lookahead affinities of an agent's networks."""

    def __init__(self, every: int, agent: Agent, run_dir: Path):
        self.every, self.agent, self.run_dir = every, agent, Path(run_dir)
        self.accumulator = AffinityAccumulator(agent.task_names)
        self.last: dict[str, torch.Tensor] = {}

    @property
    def active(self) -> bool:
        return self.every > 0

    def observe(self, batch: Batch, update: int) -> None:
        """Measure on `batch` when update number `update` is due (the global RNG is left untouched)."""
        if not self.active or update % self.every:
            return
        batch = batch.to(self.agent.device)
        with torch.random.fork_rng(devices=[] if self.agent.device.type == "cpu" else [self.agent.device]):
            for net, (loss, inputs) in self.agent.loss_terms(batch).items():
                lr = getattr(self.agent, f"{net}_optim").param_groups[0]["lr"]
                self.last[net] = lookahead_affinity(self.agent.objectives[net], loss, inputs, batch.counts, lr)
                self.accumulator.add(net, self.last[net])

    def log(self, log: Any, step: int) -> None:
        """The last matrices (numbers per task pair and an image) and the accumulated file."""
        if not self.last:
            return
        names = self.agent.task_names
        for net, matrix in self.last.items():
            for i, source in enumerate(names):
                log.per_task(f"affinity/{net}/{source}", matrix[i], step)
            scaled = matrix / max(float(matrix.abs().max()), 1e-12)
            log.writer.add_image(f"affinity/{net}", ((scaled + 1.0) / 2.0).unsqueeze(0).float(), step)
        self.accumulator.save(self.run_dir)

    def state_dict(self) -> dict[str, Any]:
        return self.accumulator.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state:
            self.accumulator.load_state_dict({k: np.asarray(v) for k, v in state.items()})
