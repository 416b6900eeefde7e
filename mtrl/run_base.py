"""What online and offline training runs share: evaluation, stop signals and the end of a run."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig

from envs import EnvSpec
from envs.vector import MultiTaskVectorEnv
from mtrl.errors import UserError
from mtrl.evaluation import EvalResult, evaluate
from mtrl.logger import RunLogger

EVAL_SEED_OFFSET = 1_000_003  # evaluation envs use their own seed stream


class RunBase:
    """Base of a training run; subclasses set cfg, run_dir, spec, agent and step, and define the loop."""

    step_unit = "step"  # what `step` counts, for messages
    cfg: DictConfig
    run_dir: Path
    spec: EnvSpec
    agent: Any
    step: int
    eval_env: MultiTaskVectorEnv | None = None
    stop_requested: bool = False

    def _check_resumed_env(self, state: dict[str, Any]) -> None:
        """A checkpoint resumes only a run on the same tasks under the same protocol."""
        saved_tasks = state["env"]["tasks"]
        if saved_tasks != self.spec.task_names:
            raise UserError(f"checkpoint was trained on tasks {saved_tasks}; this config has {self.spec.task_names}")
        if state["env"]["protocol"]["name"] != self.spec.protocol.name:
            raise UserError(f"checkpoint used protocol '{state['env']['protocol']['name']}'; "
                            f"this config has '{self.spec.protocol.name}'")

    def save_checkpoint(self) -> Path:
        raise NotImplementedError

    def close(self) -> None:
        if self.eval_env is not None:
            self.eval_env.close()
            self.eval_env = None

    def evaluate(self) -> EvalResult:
        """Deterministic episodes in the real environments (evaluate.py's code), written to eval/step_<N>.json."""
        if self.eval_env is None:
            self.eval_env = self.spec.make(self.cfg.seed + EVAL_SEED_OFFSET, evaluation=True)
        episodes = self.cfg.eval_episodes or self.spec.protocol.eval_episodes
        result = evaluate(lambda o, t: self.agent.act(o, t, deterministic=True), self.eval_env, episodes,
                          self.cfg.seed + EVAL_SEED_OFFSET)
        result.write(self.run_dir / "eval" / f"step_{self.step:012d}.json")
        return result

    def _log_eval(self, log: RunLogger) -> EvalResult:
        result = self.evaluate()
        log.per_task("eval/success", [t.success_rate for t in result.tasks], self.step)
        log.per_task("eval/return", [t.mean_return for t in result.tasks], self.step)
        log.message(f"{self.step_unit} {self.step}: eval mean success {result.mean_success:.3f} "
                    f"({result.protocol} protocol)")
        return result

    def _request_stop(self, signum: int, _frame: Any) -> None:
        if self.stop_requested:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.stop_requested = True

    @contextmanager
    def _session(self, log: RunLogger) -> Iterator[None]:
        """Ctrl-C / SIGTERM request a clean stop while the loop runs; the logger and envs close afterwards."""
        handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            log.close()
            self.close()

    def _wrap_up(self, log: RunLogger, result: EvalResult | None, last_eval: int, last_ckpt: int) -> EvalResult | None:
        """End of the loop: evaluate (unless stopped or just done) and checkpoint the final step."""
        if self.stop_requested:
            log.message(f"stop requested: checkpoint at {self.step_unit} {self.step} in {self.run_dir}")
        elif last_eval != self.step:
            result = self._log_eval(log)
        if last_ckpt != self.step:
            self.save_checkpoint()
        return result


def crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (before, after]."""
    return every > 0 and after // every > before // every
