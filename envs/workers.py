"""Async vectorisation: a pool of worker processes, each stepping a slice of the envs (not one per env).

gymnasium's AsyncVectorEnv starts one process per sub-env (and forks by default); here `workers` processes
each hold an `EnvGroup` of consecutive envs and step them in turn, so MT50 x copies runs on as many cores as
there are. Observations, rewards and flags travel through one shared-memory block (`BufferLayout`); each
worker gets commands ("step", "reset", "call", ...) through its own pipe and answers ("ok", result) or
("error", traceback).

- Start method: forkserver (spawn where it is missing), never fork: forking a learner whose torch/OpenMP
  threads are running can deadlock the child. The forkserver preloads the main module and this module, so a
  worker starts in milliseconds and does not import the main script again.
- Workers ignore SIGINT and SIGTERM: Ctrl-C or a scheduler's SIGTERM reaches the learner, which stops
  cleanly and closes the pool. A worker exits on "close", when the learner's end of its pipe closes (the
  learner died), or when `close()` kills it after a grace period.
- A worker that dies or raises makes the next call raise `WorkerError` naming the worker and its envs; the
  whole pool is closed first, so nothing hangs or leaks. A KeyboardInterrupt in the learner while it waits
  on the workers kills them and is re-raised.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.util import Finalize
from typing import Any, Callable, NoReturn, Sequence

import gymnasium as gym
import numpy as np

from envs.group import Backend, BufferLayout, EnvGroup
from mtrl import checks

MIN_CORES_FOR_ASYNC = 3  # `auto` picks async from this many usable cores: the learner's + at least 2 workers
CLOSE_TIMEOUT_S = 10.0  # how long `close()` waits for a worker to finish its command and exit before killing it


class WorkerError(RuntimeError):
    """An env worker process died or raised; the pool is closed."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else the core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_vectorization(
    vectorization: str, workers: int | str, num_envs: int, cores: int | None = None
) -> tuple[str, int]:
    """(`sync` or `async`, worker processes; 0 for sync) for `env.vectorization` and `env.workers`.

    auto: async when `workers` is a number or at least MIN_CORES_FOR_ASYNC cores are usable, else sync.
    workers=auto: usable cores minus one (the learner's), at most `num_envs`, at least 1; a number is also
    capped at `num_envs`. A number of workers with vectorization=sync is refused.
    """
    checks.choice("env.vectorization", vectorization, ("auto", "sync", "async"))
    if workers != "auto":
        checks.integer("env.workers", workers, 1)
    cores = usable_cores() if cores is None else cores
    if vectorization == "sync":
        if workers != "auto":
            raise checks.fail("env.workers", workers, "auto with env.vectorization=sync (workers are processes)")
        return "sync", 0
    if vectorization == "auto" and workers == "auto" and cores < MIN_CORES_FOR_ASYNC:
        return "sync", 0
    count = cores - 1 if workers == "auto" else int(workers)
    return "async", max(1, min(count, num_envs))


def _context() -> mp.context.BaseContext:
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", __name__])
        return ctx
    return mp.get_context("spawn")


def _work(
    block: Any,
    layout: BufferLayout,
    start: int,
    stop: int,
    env_fns: Sequence[Callable[[], gym.Env]],
    normalize: bool,
    conn: Connection,
) -> None:
    """A worker's life: build its envs over rows [start, stop) of the shared block, then serve commands."""
    from mtrl.io import mujoco_log

    mujoco_log.route_from_environment()  # forkserver workers do not inherit the learner's warning handler
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    group = None
    try:
        group = EnvGroup([fn() for fn in env_fns], layout.view(block).rows(start, stop), normalize)
        conn.send(("ok", None))
        while True:
            method, args = conn.recv()
            if method == "close":
                break
            conn.send(("ok", getattr(group, method)(*args)))
    except EOFError:  # the learner is gone
        pass
    except BaseException:  # noqa: BLE001  (reported to the learner, which raises WorkerError)
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
    finally:
        if group is not None:
            group.close()
        conn.close()


@dataclass
class _Worker:
    index: int
    start: int
    stop: int
    process: Any  # a multiprocessing Process
    conn: Connection

    def describe(self) -> str:
        envs = f"env {self.start}" if self.stop - self.start == 1 else f"envs {self.start}..{self.stop - 1}"
        return f"env worker {self.index} (pid {self.process.pid}, {envs})"


def _shutdown(workers: Sequence[_Worker], graceful: bool = True) -> None:
    """Ask every worker to close (graceful), wait for it, kill what is still alive, close the pipes."""
    if graceful:
        for worker in workers:
            try:
                worker.conn.send(("close", ()))
            except OSError:
                pass
    for worker in workers:
        if graceful:
            worker.process.join(CLOSE_TIMEOUT_S)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(CLOSE_TIMEOUT_S)
        worker.conn.close()


class WorkerPool(Backend):
    """`workers` processes stepping consecutive slices of the envs built by `env_fns` (see the module doc)."""

    def __init__(
        self, env_fns: Sequence[Callable[[], gym.Env]], task_ids: Sequence[int], normalize: bool, workers: int
    ):
        probe = env_fns[0]()  # the spaces size the shared block before any worker exists
        self.single_observation_space, self.single_action_space = probe.observation_space, probe.action_space
        layout = BufferLayout.for_env(probe, len(env_fns))
        probe.close()
        ctx = _context()
        self._block = ctx.RawArray("b", layout.nbytes)
        self.buffers = layout.view(self._block)
        self.buffers.task_id[:] = task_ids
        self.workers: list[_Worker] = []
        self._pending: list[_Worker] = []
        self.closed = False
        self._finalizer = Finalize(self, _shutdown, args=(self.workers,), exitpriority=100)
        try:
            for index, rows in enumerate(np.array_split(np.arange(len(env_fns)), min(workers, len(env_fns)))):
                start, stop = int(rows[0]), int(rows[-1]) + 1
                parent, child = ctx.Pipe()
                process = ctx.Process(
                    target=_work,
                    name=f"mtrl-env-worker-{index}",
                    daemon=True,
                    args=(self._block, layout, start, stop, list(env_fns[start:stop]), normalize, child),
                )
                process.start()
                child.close()
                self.workers.append(_Worker(index, start, stop, process, parent))
            for worker in self.workers:  # each answers once its envs are built
                self._receive(worker)
        except BaseException:
            self._force_close()
            raise

    # ----- commands --------------------------------------------------------------------------------------------
    def step_async(self) -> None:
        self._check_open()
        active = self.buffers.active
        self._pending = [w for w in self.workers if active[w.start : w.stop].any()]
        for worker in self._pending:
            self._send(worker, "step", ())

    def step_wait(self) -> None:
        pending, self._pending = self._pending, []
        for worker in pending:
            self._receive(worker)

    def run(self, method: str, *args: Any, per_env: Sequence[Any] | None = None) -> list[Any] | None:
        self._check_open()
        for worker in self.workers:
            head = () if per_env is None else (list(per_env[worker.start : worker.stop]),)
            self._send(worker, method, (*head, *args))
        results = [self._receive(worker) for worker in self.workers]
        if all(result is None for result in results):
            return None
        return [item for result in results for item in result]

    def close(self) -> None:
        """Close every worker (each finishes its current command first); idempotent."""
        if not self.closed:
            self.closed = True
            self._finalizer()

    # ----- plumbing ----------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise WorkerError("the env worker pool is closed")

    def _send(self, worker: _Worker, method: str, args: tuple) -> None:
        try:
            worker.conn.send((method, args))
        except OSError:
            self._fail(worker, None)
        except KeyboardInterrupt:
            self._force_close()
            raise

    def _receive(self, worker: _Worker) -> Any:
        try:
            status, payload = worker.conn.recv()
        except (EOFError, OSError):
            self._fail(worker, None)
        except KeyboardInterrupt:
            self._force_close()
            raise
        if status == "error":
            self._fail(worker, payload)
        return payload

    def _fail(self, worker: _Worker, remote_traceback: str | None) -> NoReturn:
        """Close the pool and raise the error of `worker` (it raised `remote_traceback`, or it died)."""
        name = worker.describe()
        if remote_traceback is None:
            worker.process.join(1.0)
            self._force_close()
            code = worker.process.exitcode
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            raise WorkerError(f"{name} died ({how}); the env worker pool is closed")
        self._force_close()
        last = remote_traceback.strip().splitlines()[-1]
        raise WorkerError(f"{name} raised {last}; the env worker pool is closed\nworker traceback:\n{remote_traceback}")

    def _force_close(self) -> None:
        """Kill every worker now (an error or an interrupt: their state no longer matters)."""
        self.closed = True
        self._pending = []
        self._finalizer.cancel()
        _shutdown(self.workers, graceful=False)
