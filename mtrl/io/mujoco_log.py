"""MuJoCo's warnings go to a log file beside a command's results, not to stdout and ./MUJOCO_LOG.TXT.

Without a handler, every `mju_warning` (e.g. "Nan, Inf or huge value in CTRL ... The simulation is unstable")
is printed on stdout and appended to MUJOCO_LOG.TXT in the working directory, once per warning kind, env and
episode: a diverged policy wrote thousands of lines that way. `route(path)` installs a handler
(`mujoco.set_mju_user_warning`) that appends the first MAX_WRITTEN warnings of the process to `path` (created
only when a warning comes), counts the rest, and prints one line on stdout at the first warning naming the file.

The handler is per process: `route` also puts the path in the MTRL_MUJOCO_LOG environment variable, so env
worker processes (started by forkserver or spawn, which do not inherit it) install the same handler with
`route_from_environment()`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import mujoco
from tqdm import tqdm

ENV_VAR = "MTRL_MUJOCO_LOG"
MAX_WRITTEN = 100  # warnings written per process; later ones are only counted


class WarningLog:
    """MuJoCo warning handler appending to one file; the first warning is announced, later ones past the cap counted."""

    def __init__(self, path: Path, announce: bool = True):
        self.path = Path(path)
        self.count = 0
        self.announce = announce

    def __call__(self, message: str) -> None:
        self.count += 1
        if self.count == 1 and self.announce:
            tqdm.write(f"MuJoCo warned: {message.strip()} (its warnings go to {self.path})")
        if self.count <= MAX_WRITTEN:
            line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {message.strip()}"
        elif self.count == MAX_WRITTEN + 1:
            line = f"pid {os.getpid()}: more than {MAX_WRITTEN} warnings; the rest are not written"
        else:
            return
        try:
            with open(self.path, "a") as handle:
                handle.write(line + "\n")
        except OSError:  # a log that cannot be written must not stop the simulation
            pass


def route(path: str | Path, announce: bool = True) -> WarningLog:
    """Send this process's MuJoCo warnings (and, through MTRL_MUJOCO_LOG, its env workers') to `path`."""
    handler = WarningLog(Path(path).expanduser().resolve(), announce)
    os.environ[ENV_VAR] = str(handler.path)
    mujoco.set_mju_user_warning(handler)
    return handler


def beside(output: str | Path) -> Path:
    """The log file of a command whose result is `output`: `<output stem>.mujoco.log` in the same folder."""
    output = Path(output)
    return output.with_name(f"{output.stem}.mujoco.log")


def route_from_environment() -> WarningLog | None:
    """In a worker process: install the handler for the path the parent routed to (silently), if any."""
    path = os.environ.get(ENV_VAR)
    return route(path, announce=False) if path else None


__all__ = ["route", "beside", "route_from_environment", "WarningLog", "MAX_WRITTEN", "ENV_VAR"]
