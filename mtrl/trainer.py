"""The online training loop: collect with the actor, store per task, update SAC, evaluate, checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from envs import EnvSpec, build_env_spec
from mtrl import balancers, checkpoint
from mtrl.agents import SACAgent, SACConfig
from mtrl.curriculum.driver import CurriculumDriver
from mtrl.config import check_values, pick_device, rng_states, seed_everything, set_rng_states, to_plain
from mtrl.errors import UserError
from mtrl.evaluation import EvalResult
from mtrl.logger import RunLogger
from mtrl.replay import MultiTaskReplay
from mtrl.run_base import RunBase, crossed



def build_agent(cfg: DictConfig, spec: EnvSpec, obs_dim: int, act_dim: int) -> SACAgent:
    """The SAC agent described by cfg.agent and cfg.encoder on the device cfg.device."""
    agent_cfg = to_plain(cfg.agent)
    unknown = sorted(set(agent_cfg) - set(SACConfig.__dataclass_fields__))
    if unknown:
        raise UserError(f"unknown agent option(s) {', '.join(unknown)}; allowed: {', '.join(SACConfig.__dataclass_fields__)}")
    agent = SACAgent(obs_dim, act_dim, spec.task_names, SACConfig(**agent_cfg), network_encoder(cfg, "actor"),
                     pick_device(cfg.device), critic_encoder=network_encoder(cfg, "critic"))
    agent.set_balancers(*build_balancers(to_plain(cfg.balancer), agent.num_tasks))
    return agent


def network_encoder(cfg: DictConfig, network: str) -> dict[str, Any]:
    """The encoder of `network` (actor or critic): `<network>.encoder` with its options, else the `encoder` group."""
    chosen = OmegaConf.select(cfg, f"{network}.encoder")
    if chosen is None:
        return to_plain(cfg.encoder)
    options = to_plain(OmegaConf.select(cfg, f"{network}.encoder_options")) or {}
    return {"name": chosen, **options}


def build_balancers(balancer_cfg: dict[str, Any], num_tasks: int) -> tuple[balancers.Balancer, balancers.Balancer]:
    """(critic, actor) balancers: the configured method on the losses named in apply_to, uniform elsewhere."""
    options = {k: v for k, v in balancer_cfg.items() if k not in ("name", "apply_to")}
    apply_to = balancer_cfg.get("apply_to", ["critic", "actor"])
    if isinstance(apply_to, str):
        apply_to = [apply_to]
    wrong = sorted(set(apply_to) - {"critic", "actor"})
    if wrong:
        raise UserError(f"balancer.apply_to has {', '.join(map(str, wrong))}; allowed: critic, actor")
    name = balancer_cfg["name"]
    balancers.make(name, num_tasks, **options)  # validate even when applied to nothing
    return tuple(balancers.make(name, num_tasks, **options) if part in apply_to else balancers.make("uniform", num_tasks)
                 for part in ("critic", "actor"))


class Trainer(RunBase):
    """Owns one run: its envs, agent, replay, logger and the loop; resumable from its checkpoints."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        check_values(cfg)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        resume_state = self._load_resume_state()
        seed_everything(cfg.seed, cfg.torch_threads)
        self.spec = build_env_spec(to_plain(cfg.env), cfg.seed)
        self.env = self.spec.make(cfg.seed)
        self.num_tasks = len(self.spec.task_names)
        self.agent = build_agent(cfg, self.spec, self.env.obs_dim, self.env.act_dim)
        capacity = max(1, cfg.replay_capacity // self.num_tasks)
        self.replay = MultiTaskReplay(self.num_tasks, capacity, self.env.obs_dim, self.env.act_dim, cfg.seed)
        self.curriculum = CurriculumDriver.from_config(to_plain(cfg.curriculum), self.num_tasks)
        self.step = 0
        self.updates = 0
        self.update_budget = 0.0
        self.stop_requested = False
        if resume_state is not None:
            self._restore(resume_state)

    # ----- resume ----------------------------------------------------------------------------------
    def _load_resume_state(self) -> dict[str, Any] | None:
        if self.cfg.resume is None:
            return None
        _, state = checkpoint.load(self.cfg.resume)
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self._check_resumed_env(state)
        self.agent.load_state_dict(state["agent"])
        self.step, self.updates, self.update_budget = state["step"], state["updates"], state["update_budget"]
        set_rng_states(state["rng"])
        self.env.action_rng.bit_generator.state = state["env_action_rng"]
        if state.get("replay") is not None:
            self.replay.load_state_dict(state["replay"])
        self.curriculum.load_state_dict(state.get("curriculum", {}))

    def save_checkpoint(self) -> Path:
        state = {
            "config": to_plain(self.cfg),
            "env": self.spec.describe(),
            "dims": {"obs": self.env.obs_dim, "act": self.env.act_dim},
            "agent": self.agent.state_dict(),
            "updates": self.updates,
            "update_budget": self.update_budget,
            "rng": rng_states(),
            "env_action_rng": self.env.action_rng.bit_generator.state,
            "replay": self.replay.state_dict() if self.cfg.save_replay else None,
            "curriculum": self.curriculum.state_dict(),
        }
        return checkpoint.save(self.run_dir, self.step, state, self.cfg.keep_checkpoints)

    # ----- the loop -------------------------------------------------------------------------------------
    def _learning_ready(self) -> bool:
        return self.step >= self.cfg.warmup_steps and int(self.replay.sizes.min()) >= self.cfg.batch_size_per_task

    def run(self) -> EvalResult | None:
        """Train until total_steps (or a signal), evaluating and checkpointing on schedule."""
        cfg, k = self.cfg, self.num_tasks
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        (self.run_dir / "env.json").write_text(json.dumps(self.spec.describe(), indent=2))
        log = RunLogger(self.run_dir, self.spec.task_names, cfg.total_steps, self.step, cfg.progress)
        counts = self.curriculum.batch_counts(cfg.batch_size_per_task, self.replay.sizes)
        self._push_env_probabilities()
        result: EvalResult | None = None
        last_ckpt = last_eval = -1
        obs = self.env.reset(seed=cfg.seed + self.step)
        clock, clock_step, clock_updates = time.perf_counter(), self.step, self.updates
        metrics: dict[str, Any] = {}
        batch = None
        with self._session(log):
            while self.step < cfg.total_steps and not self.stop_requested:
                if self.step < cfg.warmup_steps:
                    actions = self.env.random_actions()
                else:
                    actions = self.agent.act(obs, self.env.task_ids, deterministic=False)
                out = self.env.step(actions)
                self.replay.add(out.task_ids, obs, actions, out.reward, out.next_obs, out.terminated)
                obs = out.obs
                before, self.step = self.step, self.step + k
                for ep in out.episodes:
                    log.episode(ep.task_id, ep.ret, ep.success, self.step)
                if out.episodes and self.curriculum.active:
                    self.curriculum.observe_episodes(out.episodes)
                    counts = self.curriculum.batch_counts(cfg.batch_size_per_task, self.replay.sizes)
                    self._push_env_probabilities()
                if out.episodes and (recent := log.recent_mean_success()) is not None:
                    log.show(success=f"{recent:.2f}")
                if self._learning_ready():
                    self.update_budget += cfg.updates_per_step
                    while self.update_budget >= 1.0:
                        batch = self.replay.sample(counts)
                        metrics = self.agent.update(batch)
                        self.updates += 1
                        self.update_budget -= 1.0
                log.advance(k)
                if crossed(before, self.step, cfg.log_every):
                    now = time.perf_counter()
                    log.scalar("perf/env_steps_per_s", (self.step - clock_step) / (now - clock), self.step)
                    log.scalar("perf/updates_per_s", (self.updates - clock_updates) / (now - clock), self.step)
                    clock, clock_step, clock_updates = now, self.step, self.updates
                    for name, values in metrics.items():
                        log.per_task(f"sac/{name}", values, self.step)
                    if batch is not None:
                        log.balancer(self.agent.diagnostics(batch), self.step)
                    if self.curriculum.active:
                        log.per_task("curriculum/probability", self.curriculum.curriculum.probabilities(), self.step)
                        log.per_task("curriculum/progress", self.curriculum.curriculum.progress(), self.step)
                        log.per_task("curriculum/batch_count", counts, self.step)
                if cfg.eval_every and crossed(before, self.step, cfg.eval_every):
                    result = self._log_eval(log)
                    last_eval = self.step
                    if self.curriculum.observe_evaluation(t.success_rate for t in result.tasks):
                        counts = self.curriculum.batch_counts(cfg.batch_size_per_task, self.replay.sizes)
                        self._push_env_probabilities()
                if cfg.checkpoint_every and crossed(before, self.step, cfg.checkpoint_every):
                    self.save_checkpoint()
                    last_ckpt = self.step
            result = self._wrap_up(log, result, last_eval, last_ckpt)
        return result

    def _push_env_probabilities(self) -> None:
        probabilities = self.curriculum.env_probabilities()
        if probabilities is not None and self.spec.slots is not None:
            self.env.set_task_probabilities(probabilities)

    def close(self) -> None:
        self.env.close()
        super().close()


def train(cfg: DictConfig, run_dir: Path) -> EvalResult | None:
    """Build a trainer from the config and run it."""
    return Trainer(cfg, run_dir).run()


__all__ = ["Trainer", "train", "build_agent"]
