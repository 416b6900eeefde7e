"""Offline multi-task training: any offline agent (`agent=cql`, `agent=bc`) on a stored dataset.

    python train.py mode=offline dataset=data/x.h5 sharing=cds env.tasks=[reach-v3,push-v3] env.protocol=mtrl

No environment is stepped during training; evaluation runs the real environments with the same
code as evaluate.py. Steps are gradient updates: `total_steps`, `eval_every`, `checkpoint_every`
and `log_every` count updates in offline mode. The data side (consistency checks, relabelling,
sharing) lives in `mtrl.data.offline`; this module is the loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtrl.agents.factory import build_agent
from mtrl.config.schema import TrainConfig
from mtrl.data.offline import OfflineData
from mtrl.eval.evaluation import EvalResult
from mtrl.io.logger import RunLogger
from mtrl.train.run_base import RunBase


class OfflineTrainer(RunBase):
    """Owns one offline run: the data, the agent, the logger and the evaluation env; resumable."""

    mode = "offline"
    step_unit = "update"
    rate_tag = "perf/updates_per_s"

    def __init__(self, config: TrainConfig, run_dir: Path):
        super().__init__(config, run_dir)
        self.data = OfflineData(config)
        self.spec = self.data.spec
        self.dims = {"obs": self.data.dataset.obs_dim, "act": self.data.dataset.act_dim}
        self.attach_agent(build_agent(config, self.spec.task_names, self.dims["obs"], self.dims["act"]))
        if config.offline.normalize_obs:
            self.agent.set_obs_normalizer(self.data.obs_normalizer(self.agent.device))
        if self.resume_state is not None:
            self.restore(self.resume_state)
        self.data.build_store(self.run_dir)

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.data.check_resumed(state)
        self.data.rng.bit_generator.state = state["sampler_rng"]

    def trainer_state(self) -> dict[str, Any]:
        return {**self.data.describe, "sampler_rng": self.data.rng.bit_generator.state}

    def run(self) -> EvalResult | None:
        """Train for total_steps updates (or until a signal), evaluating and checkpointing on schedule."""
        config = self.config
        self.prepare_directory({**self.spec.describe(), **self.data.describe})
        self.data.write_cache(self.run_dir)  # relabelled rewards, into the directory this run now owns
        log = RunLogger(
            self.run_dir,
            self.spec.task_names,
            config.total_steps,
            self.step,
            config.progress,
            unit="update",
            description=f"offline[{self.agent.name},{self.data.sharing}]",
            logger=config.logger,
            config=config.raw,
        )
        task_q = self.agent.task_q if self.agent.has_q else None
        with self.session(log):
            while self.step < config.total_steps and not self.stop_requested:
                self.last_batch = self.data.sample(task_q, self.agent.device)
                self.metrics = self.agent.update(self.last_batch)
                self.after_update(self.step)
                before, self.step = self.step, self.step + 1
                log.advance(1)
                self.tick(log, before)
        return self.result

    def log_progress(self, log: RunLogger) -> None:
        self.log_update(log)
        self.data.log(log, self.step)


def train_offline(config: TrainConfig, run_dir: Path) -> EvalResult | None:
    """Build an offline trainer from the config and run it."""
    return OfflineTrainer(config, run_dir).run()


__all__ = ["OfflineTrainer", "train_offline"]
