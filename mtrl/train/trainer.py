"""The online training loop: act, step the envs while the agent updates, store per task, evaluate, checkpoint."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from envs import EnvSpec, build_env_spec
from envs.vector import EpisodeResult, StepResult
from mtrl.agents.factory import build_agent
from mtrl.config.schema import TrainConfig
from mtrl.curriculum.driver import CurriculumDriver
from mtrl.errors import UserError
from mtrl.eval.evaluation import EvalResult
from mtrl.io.logger import RunLogger
from mtrl.train.guard import check_actions
from mtrl.train.replay import MultiTaskReplay, replay_bytes, replay_device
from mtrl.train.run_base import RunBase


def check_can_learn(config: TrainConfig, spec: EnvSpec) -> None:
    """Refuse configurations that would finish without a single update (and so report an untrained agent).

    An update needs the warm-up passed and `batch_size_per_task` stored transitions of every task; the last
    chance for one is the last vector step before total_steps, when the replay holds that step's count.
    """
    num_tasks = len(spec.task_names)
    capacity = config.replay_capacity // num_tasks
    if capacity < config.batch_size_per_task:
        raise UserError(
            f"replay_capacity={config.replay_capacity} holds {capacity} transitions per task, fewer than "
            f"batch_size_per_task={config.batch_size_per_task}: no update could ever run; raise "
            f"replay_capacity to at least {config.batch_size_per_task * num_tasks}"
        )
    if config.updates_per_step == 0:
        raise UserError("updates_per_step=0 trains nothing; expected a number > 0")
    vector = spec.slots or num_tasks * spec.envs_per_task
    last = (math.ceil(config.total_steps / vector) - 1) * vector  # env steps stored when the last update could run
    if config.warmup_steps > last:
        raise UserError(
            f"warmup_steps={config.warmup_steps} with total_steps={config.total_steps}: the run would end before "
            f"its first update (the last one could run at step {last}, in vector steps of {vector} envs); lower "
            f"warmup_steps or raise total_steps"
        )
    if last // num_tasks < config.batch_size_per_task:
        needed = config.batch_size_per_task * num_tasks + vector
        raise UserError(
            f"total_steps={config.total_steps} stores about {last // num_tasks} transitions per task before the "
            f"last update, fewer than batch_size_per_task={config.batch_size_per_task}: the run would end before "
            f"its first update; raise total_steps to at least {needed} or lower batch_size_per_task"
        )


class Trainer(RunBase):
    """Owns one online run: its envs, agent, replay, curriculum, logger and the loop; resumable."""

    mode = "online"

    def __init__(self, config: TrainConfig, run_dir: Path):
        super().__init__(config, run_dir)
        self.spec = build_env_spec(dataclasses.asdict(config.env), config.seed)
        self.num_tasks = len(self.spec.task_names)
        check_can_learn(config, self.spec)
        self.env = self.spec.make(config.seed)
        self.dims = {"obs": self.env.obs_dim, "act": self.env.act_dim}
        agent = build_agent(config, self.spec.task_names, self.env.obs_dim, self.env.act_dim)
        self.attach_agent(agent)
        capacity = config.replay_capacity // self.num_tasks
        size = replay_bytes(self.num_tasks, capacity, self.env.obs_dim, self.env.act_dim)
        self.replay = MultiTaskReplay(
            self.num_tasks,
            capacity,
            self.env.obs_dim,
            self.env.act_dim,
            config.seed,
            device=replay_device(config, agent.device, size),
        )
        self.curriculum = CurriculumDriver.from_config(config.curriculum, self.num_tasks)
        self.updates = 0
        self.update_budget = 0.0
        self.pool_rng = np.random.default_rng([config.seed, 1])  # per-task counts of pooled batches
        self.update_clock = (time.perf_counter(), 0)
        if self.resume_state is not None:
            self.restore(self.resume_state)

    # ----- resume -----------------------------------------------------------------------------------------
    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.updates, self.update_budget = int(state["updates"]), float(state["update_budget"])
        self.env.action_rng.bit_generator.state = state["env_action_rng"]
        if "pool_rng" in state:
            self.pool_rng.bit_generator.state = state["pool_rng"]
        if state.get("replay") is not None:
            self.replay.load_state_dict(state["replay"])
        self.curriculum.load_state_dict(state.get("curriculum", {}))
        self.env.load_normalizer_state(state.get("reward_normalizer"))

    def trainer_state(self) -> dict[str, Any]:
        return {
            "updates": self.updates,
            "update_budget": self.update_budget,
            "env_action_rng": self.env.action_rng.bit_generator.state,
            "pool_rng": self.pool_rng.bit_generator.state,
            "replay": self.replay.state_dict() if self.config.save_replay else None,
            "curriculum": self.curriculum.state_dict(),
            "reward_normalizer": self.env.normalizer_state(),
        }

    # ----- the loop ---------------------------------------------------------------------------------------
    def run(self) -> EvalResult | None:
        """Train until total_steps (or a signal), evaluating and checkpointing on schedule."""
        config = self.config
        self.prepare_directory(self.spec.describe())
        log = RunLogger(
            self.run_dir,
            self.spec.task_names,
            config.total_steps,
            self.step,
            config.progress,
            logger=config.logger,
            config=config.raw,
        )
        self.curriculum.push(self.env, switching=self.spec.slots is not None)
        obs = self.env.reset(seed=config.seed + self.step)
        with self.session(log):
            while self.step < config.total_steps and not self.stop_requested:
                actions = self.choose_actions(obs)
                self.env.step_async(actions)  # the envs step (in worker processes when async) ...
                self.learn()  # ... while the agent updates on what was stored before this step
                out = self.env.step_wait()
                self.replay.add(out.task_ids, obs, actions, out.reward, self.stored_next_obs(out), out.terminated)
                self.agent.observe_rewards(out.task_ids, out.reward, out.terminated, out.truncated)
                obs = out.obs
                before, self.step = self.step, self.step + len(actions)
                self.record_episodes(log, out.episodes)
                log.advance(self.step - before)
                self.tick(log, before)
        return self.result

    def choose_actions(self, obs: np.ndarray) -> np.ndarray:
        """Uniform random actions during warm-up, then samples of the agent's policy (refused if not finite:
        a diverged policy stops the run here, naming the update, before MuJoCo steps its NaN actions)."""
        if self.step < self.config.warmup_steps:
            return self.env.random_actions()
        actions = self.agent.act(obs, self.env.task_ids, deterministic=False)
        if not np.isfinite(actions).all():
            self.guard.check(self.step_unit, self.step)
            check_actions(actions, f"training at step {self.step}")
        return actions

    def stored_next_obs(self, out: StepResult) -> np.ndarray:
        """The next observations to store: the true ones, or under `horizon_next_obs=reset` the next episode's
        reset observation where the time limit ended one (facebookresearch/mtrl multitask.py:224-249)."""
        if self.config.horizon_next_obs == "final" or not out.truncated.any():
            return out.next_obs
        return np.where((out.truncated & ~out.terminated)[:, None], out.obs, out.next_obs)

    def batch_counts(self) -> np.ndarray:
        """Rows per task of the next batch: the curriculum's (equal shares without one), or under
        `batch_sampling=uniform` a draw of uniform rows from all tasks' stored transitions (multinomial counts)."""
        if self.config.batch_sampling == "per_task":
            return self.curriculum.batch_counts(self.config.batch_size_per_task, self.replay.sizes)
        total = self.config.batch_size or self.config.batch_size_per_task * self.num_tasks
        sizes = self.replay.sizes.astype(np.float64)
        return self.pool_rng.multinomial(total, sizes / sizes.sum())

    def learning_ready(self) -> bool:
        return self.step >= self.config.warmup_steps and int(self.replay.sizes.min()) >= self.config.batch_size_per_task

    def learn(self) -> None:
        """This vector step's updates (`updates_per_step`, fractions accumulating), once learning is ready; the first
        learning step runs `warmup_burst_updates` instead when set (facebookresearch/mtrl multitask.py:218-223)."""
        if not self.learning_ready():
            return
        burst = self.config.warmup_burst_updates if self.updates == 0 and self.update_budget == 0.0 else 0
        self.update_budget += burst or self.config.updates_per_step  # the burst replaces the first step's updates
        while self.update_budget >= 1.0:
            counts = self.batch_counts()
            self.last_batch = self.replay.sample(counts)
            self.metrics = self.agent.update(self.last_batch)
            self.after_update(self.updates)
            self.updates += 1
            self.update_budget -= 1.0

    def record_episodes(self, log: RunLogger, episodes: list[EpisodeResult]) -> None:
        """Finished training episodes: TensorBoard, the progress bar, the curriculum."""
        for episode in episodes:
            log.episode(episode.task_id, episode.ret, episode.success, self.step)
        if episodes:
            self.curriculum.observe_episodes(episodes)
            self.curriculum.push(self.env, switching=self.spec.slots is not None)
            if (recent := log.recent_mean_success()) is not None:
                log.show(success=f"{recent:.2f}")

    # ----- logging hooks ---------------------------------------------------------------------------------
    def log_progress(self, log: RunLogger) -> None:
        self.log_update(log)
        now, (start, start_updates) = time.perf_counter(), self.update_clock
        log.scalar("perf/updates_per_s", (self.updates - start_updates) / max(now - start, 1e-9), self.step)
        self.update_clock = (now, self.updates)
        self.curriculum.log(
            log, self.curriculum.batch_counts(self.config.batch_size_per_task, self.replay.sizes), self.step
        )

    def close(self) -> None:
        self.env.close()
        super().close()

    def after_evaluation(self) -> None:
        if self.result is not None and self.curriculum.observe_evaluation(t.success_rate for t in self.result.tasks):
            self.curriculum.push(self.env, switching=self.spec.slots is not None)


def train(config: TrainConfig, run_dir: Path) -> EvalResult | None:
    """Build a trainer from the config and run it."""
    return Trainer(config, run_dir).run()


__all__ = ["Trainer", "train", "check_can_learn"]
