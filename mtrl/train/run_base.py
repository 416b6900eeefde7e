"""What online and offline training runs share: resume, checkpoints, the periodic log/eval/checkpoint
schedule, evaluation, stop signals and the end of a run. Subclasses write only their loop."""

from __future__ import annotations

import json
import shutil
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from envs import EnvSpec
from envs.vector import MultiTaskVectorEnv
from mtrl.agents.base import Agent
from mtrl.batch import Batch
from mtrl.config.parse import parse_train
from mtrl.config.schema import TrainConfig
from mtrl.errors import UserError
from mtrl.eval.evaluation import EvalResult, evaluate
from mtrl.io import checkpoint
from mtrl.io.files import check_directory
from mtrl.io.logger import RunLogger
from mtrl.io.run_lock import RunLock
from mtrl.runtime import keep_freed_memory, rng_states, seed_everything, set_rng_states
from mtrl.train.diagnostics import AffinityMonitor
from mtrl.train.guard import DivergenceGuard, check_actions, check_finite_state

EVAL_SEED_OFFSET = 1_000_003  # evaluation envs use their own seed stream


RUN_MARKERS = ("config.yaml", "checkpoints", "tb", "eval")  # what makes a directory hold a run
#: Everything a run writes in its directory (what overwrite=true deletes; nothing else is touched).
RUN_FILES = (*RUN_MARKERS, "env.json", "mujoco.log", "affinity.npz", "relabelled_rewards.npz")


def claim_run_directory(run_dir: Path, config: TrainConfig) -> RunLock:
    """A run directory belongs to one run: its lock is taken (a run already in it refuses this one), a fresh
    run may not start where another run wrote unless `overwrite=true` (which deletes that run first), and the
    directory must be writable. Called only once every component is built, so a refused config touches nothing."""
    check_directory(run_dir, "run_dir")
    lock = RunLock(run_dir)
    lock.acquire()
    try:
        clear_or_refuse(run_dir, config)
    except BaseException:
        lock.release()
        raise
    checkpoint.remove_temporary(run_dir)
    return lock


def clear_or_refuse(run_dir: Path, config: TrainConfig) -> None:
    """Refuse a directory holding another run, or (overwrite=true) delete that run's files."""
    held = [name for name in RUN_MARKERS if (run_dir / name).exists()]
    resumes_here = config.resume is not None and checkpoint.run_dir_of(config.resume).resolve() == run_dir.resolve()
    if held and not resumes_here:
        if not config.overwrite:
            raise UserError(
                f"run_dir '{run_dir}' already holds a run ({', '.join(held)}); continue it with "
                f"resume={run_dir}, choose another run_dir, or pass overwrite=true to delete it"
            )
        for target in (run_dir / name for name in RUN_FILES):
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()


#: Config groups that shape the networks (named when a resumed checkpoint's networks do not fit).
NETWORK_KEYS = ("agent", "encoder", "actor", "critic")
#: Keys that naturally differ between a run and its resumption (not reported as changes).
RESUME_KEYS = ("resume", "run_dir", "progress", "total_steps", "overwrite", "sweep", "device")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: value}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every setting a resume changes (ignoring RESUME_KEYS)."""
    old, new = flatten(saved), flatten(current)
    keys = sorted(k for k in set(old) | set(new) if k.split(".")[0] not in RESUME_KEYS and old.get(k) != new.get(k))
    return [f"{k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}" for k in keys]


def crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (before, after]."""
    return every > 0 and after // every > before // every


class RunBase:
    """Base of a training run: set `spec`, `agent` and `dims` in `__init__`, then write `run` with `tick`."""

    mode: ClassVar[str] = "online"
    step_unit: ClassVar[str] = "step"  # what `step` counts, for messages
    rate_tag: ClassVar[str] = "perf/env_steps_per_s"  # TensorBoard tag of steps per second
    spec: EnvSpec
    agent: Agent
    dims: dict[str, int]

    def __init__(self, config: TrainConfig, run_dir: Path):
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume_state = self._load_resume_state()
        self.lock: RunLock | None = None  # taken by `prepare_directory`, once everything is built
        seed_everything(config.seed, config.torch_threads)
        keep_freed_memory()
        self.step = 0
        self.stop_requested = False
        self.eval_env: MultiTaskVectorEnv | None = None
        self.result: EvalResult | None = None
        self.last_eval = self.last_checkpoint = -1
        self.best: dict[str, Any] | None = None  # step and (success, return) of the best evaluation so far
        self.clock = (time.perf_counter(), 0)

    # ----- resume ----------------------------------------------------------------------------------
    def _load_resume_state(self) -> dict[str, Any] | None:
        if self.config.resume is None:
            return None
        file, state = checkpoint.load(self.config.resume)
        saved_mode = state.get("mode", "online")
        if saved_mode != self.mode:
            raise UserError(
                f"checkpoint '{file}' is from an {saved_mode} run; mode={self.mode} resumes {self.mode} runs only"
            )
        self.resume_file = file
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Check that the checkpoint belongs to this configuration, then load the agent and RNG states."""
        saved_tasks = state["env"]["tasks"]
        if saved_tasks != self.spec.task_names:
            raise UserError(f"checkpoint was trained on tasks {saved_tasks}; this config has {self.spec.task_names}")
        if state["env"]["protocol"]["name"] != self.spec.protocol.name:
            raise UserError(
                f"checkpoint used protocol '{state['env']['protocol']['name']}'; "
                f"this config has '{self.spec.protocol.name}'"
            )
        saved = parse_train(state["config"])
        for key, ours, theirs in (
            ("agent", self.config.agent.name, saved.agent.name),
            ("balancer", self.config.balancer.name, saved.balancer.name),
            ("actor.encoder", self.config.actor_encoder.name, saved.actor_encoder.name),
            ("critic.encoder", self.config.critic_encoder.name, saved.critic_encoder.name),
        ):
            if ours != theirs:
                raise UserError(
                    f"checkpoint was trained with {key}={theirs}; this config has {key}={ours} "
                    f"(resume with {key}={theirs}, or start a new run)"
                )
        if int(state["step"]) > self.config.total_steps:
            raise UserError(
                f"total_steps={self.config.total_steps} is below the checkpoint's {self.step_unit} "
                f"{state['step']}; resume with a larger total_steps"
            )
        try:
            self.agent.load_state_dict(state["agent"])
        except UserError:
            shaping = [c for c in config_changes(state["config"], self.config.raw) if c.split(".")[0] in NETWORK_KEYS]
            if not shaping:
                raise
            raise UserError(
                f"the checkpoint's networks do not fit this config, which changes {'; '.join(shaping)}; resume with "
                f"the checkpoint's values or start a new run"
            ) from None
        self.step = int(state["step"])
        self.best = state.get("best")
        self.affinity.load_state_dict(state.get("affinity"))
        set_rng_states(state["rng"])
        self.resume_changes = config_changes(state["config"], self.config.raw)

    # ----- checkpoints -----------------------------------------------------------------------------
    def trainer_state(self) -> dict[str, Any]:
        """What this kind of run adds to a checkpoint (replay, sampler RNG, ...)."""
        return {}

    def after_update(self, update: int) -> None:
        """After update number `update`: the divergence guard and the optional affinity measurement."""
        self.guard.observe(self.metrics, update)
        self.affinity.observe(self.last_batch, update)

    def log_update(self, log: RunLogger) -> None:
        """At a log step: stop on divergence, then the agent's metrics, balancer diagnostics and affinities."""
        self.guard.check(self.step_unit, self.step)
        self.guard.check_growth(self.metrics, self.step_unit, self.step)
        log.metrics(self.agent.name, self.metrics, self.step)
        if self.last_batch is not None:
            log.balancer(self.agent.diagnostics(self.last_batch, conflict=self.conflict_due()), self.step)
        self.affinity.log(log, self.step)

    def conflict_due(self) -> bool:
        """Whether this log step measures gradient conflict: the first log step, then the first one at least
        `diagnostics.conflict_every` steps after the last measurement (0 = never)."""
        every = self.config.diagnostics.conflict_every
        if every == 0 or (self.last_conflict is not None and self.step - self.last_conflict < every):
            return False
        self.last_conflict = self.step
        return True

    def attach_agent(self, agent: Agent) -> None:
        """Use `agent` (built by the subclass once dims are known): its guard, affinity monitor and metrics."""
        self.agent = agent
        self.guard = DivergenceGuard(self.spec.task_names)
        self.affinity = AffinityMonitor(self.config.diagnostics.affinity_every, agent, self.run_dir)
        self.metrics: dict[str, Any] = {}
        self.last_batch: Batch | None = None
        self.last_conflict: int | None = None  # the step of the last gradient-conflict measurement

    def agent_state(self) -> dict[str, Any]:
        """The agent's state for a checkpoint, refused (RunFailed) when the losses diverged or any of it is not
        finite: no checkpoint, best.pt included, ever holds a diverged state."""
        self.guard.check(self.step_unit, self.step)
        state = self.agent.state_dict()
        check_finite_state(state, self.step_unit, self.step)
        return state

    def save_checkpoint(self) -> Path:
        state = {
            "mode": self.mode,
            "config": self.config.raw,
            "env": self.spec.describe(),
            "dims": self.dims,
            "agent": self.agent_state(),
            "rng": rng_states(),
            "best": self.best,
            "affinity": self.affinity.state_dict(),
            **self.trainer_state(),
        }
        self.last_checkpoint = self.step
        return checkpoint.save(self.run_dir, self.step, state, self.config.keep_checkpoints)

    # ----- evaluation -------------------------------------------------------------------------------
    def evaluate(self) -> EvalResult:
        """Deterministic episodes in the real environments (evaluate.py's code), written to eval/step_<N>.json."""
        if self.eval_env is None:
            self.eval_env = self.spec.make(self.config.seed + EVAL_SEED_OFFSET, evaluation=True)
        episodes = self.config.eval_episodes or self.spec.protocol.eval_episodes
        returns = self.config.eval_returns
        where = f"evaluation at {self.step_unit} {self.step}"
        result = evaluate(
            lambda o, t: check_actions(self.agent.act(o, t, deterministic=True), where),
            self.eval_env,
            episodes,
            self.config.seed + EVAL_SEED_OFFSET,
            progress=self.config.progress and RunLogger.line_mode is None,  # no bars in sweep jobs
            returns=self.spec.protocol.name == "mtrl" if returns is None else returns,
        )
        result.write(self.run_dir / "eval" / f"step_{self.step:012d}.json")
        return result

    def log_evaluation(self, log: RunLogger) -> EvalResult:
        result = self.evaluate()
        log.per_task("eval/success", [t.success_rate for t in result.tasks], self.step)
        if all(t.mean_return is not None for t in result.tasks):  # None: episodes ended at their first success
            log.per_task("eval/return", [t.mean_return for t in result.tasks], self.step)
        log.message(
            f"{self.step_unit} {self.step}: eval mean success {result.mean_success:.3f} ({result.protocol} protocol)"
        )
        self.result, self.last_eval = result, self.step
        self.keep_if_best(result)
        return result

    def keep_if_best(self, result: EvalResult) -> None:
        """Write checkpoints/best.pt when this evaluation beats every earlier one (mean success, then mean return).

        best.pt holds what evaluation needs (config, env, networks), not a resumable training state.
        """
        returns = [t.mean_return for t in result.tasks]
        score = (result.mean_success, float(np.mean(returns)) if None not in returns else -np.inf)
        if self.best is not None and tuple(self.best["score"]) >= score:
            return
        agent = self.agent_state()
        self.best = {"step": self.step, "score": list(score)}
        checkpoint.save_best(
            self.run_dir,
            self.step,
            {
                "mode": self.mode,
                "config": self.config.raw,
                "env": self.spec.describe(),
                "dims": self.dims,
                "agent": agent,
                "best": self.best,
            },
        )

    # ----- the periodic schedule -------------------------------------------------------------------
    def tick(self, log: RunLogger, before: int) -> None:
        """After the step moved from `before` to `self.step`: log, evaluate and checkpoint when due."""
        config = self.config
        if crossed(before, self.step, config.log_every):
            now = time.perf_counter()
            start, start_step = self.clock
            log.scalar(self.rate_tag, (self.step - start_step) / max(now - start, 1e-9), self.step)
            self.clock = (now, self.step)
            self.log_progress(log)
        if crossed(before, self.step, config.eval_every):
            self.log_evaluation(log)
            self.after_evaluation()
        if crossed(before, self.step, config.checkpoint_every):
            self.save_checkpoint()

    def log_progress(self, log: RunLogger) -> None:
        """The run's own scalars at a log step (losses, balancer weights, ...)."""

    def after_evaluation(self) -> None:
        """Hook after a periodic evaluation (e.g. a curriculum fed by evaluations)."""

    # ----- the session -------------------------------------------------------------------------------
    def prepare_directory(self, describe: dict[str, Any]) -> None:
        """Claim the run directory (lock, refuse or clear), then write config.yaml and env.json (the run's
        resolved configuration and environment). A refusal closes what the run had built."""
        import yaml

        try:
            self.lock = claim_run_directory(self.run_dir, self.config)
        except BaseException:
            self.close()
            raise
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.config.raw, sort_keys=False))
        (self.run_dir / "env.json").write_text(json.dumps(describe, indent=2))

    def _request_stop(self, signum: int, _frame: Any) -> None:
        if self.stop_requested:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.stop_requested = True

    @contextmanager
    def session(self, log: RunLogger) -> Iterator[None]:
        """Ctrl-C / SIGTERM request a clean stop while the loop runs; the run ends with a final evaluation
        and checkpoint (unless stopped), and the logger and envs close afterwards."""
        handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        if self.resume_state is not None:
            log.message(f"resumed from {self.resume_file} at {self.step_unit} {self.step}")
            for change in self.resume_changes:
                log.message(f"  resume changes {change}")
        try:
            yield
            self.guard.check(self.step_unit, self.step)
            self.wrap_up(log)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            log.close()
            self.close()

    def wrap_up(self, log: RunLogger) -> None:
        """End of the loop: evaluate (unless stopped or just done) and checkpoint the final step."""
        if self.stop_requested:
            log.message(f"stop requested: checkpoint at {self.step_unit} {self.step} in {self.run_dir}")
        elif self.last_eval != self.step:
            self.log_evaluation(log)
        if self.last_checkpoint != self.step:
            self.save_checkpoint()

    def close(self) -> None:
        if self.eval_env is not None:
            self.eval_env.close()
            self.eval_env = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
