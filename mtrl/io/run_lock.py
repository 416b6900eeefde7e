"""One run per run directory: an exclusive lock file that a killed run cannot leave held.

The lock is `fcntl.flock` on `<run_dir>/.mtrl.lock`, so the kernel frees it when its owner exits, however it
exits (kill -9 included): a later run takes the file over and rewrites it. The file records the owner's pid,
host and start time, which is what a refused run is told.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from mtrl.errors import UserError

LOCK_FILE = ".mtrl.lock"


def owner_of(path: Path) -> dict[str, Any]:
    """What a lock file says about its owner ({} when it cannot be read)."""
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


class RunLock:
    """`acquire` takes the run directory's lock or raises a one-line UserError naming its live owner."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = owner_of(self.path)
                raise UserError(
                    f"run_dir '{self.path.parent}' is in use by another run (pid {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')} since {owner.get('since', '?')}); wait for it to end or choose "
                    f"another run_dir"
                ) from None
            if self._still_linked(fd):
                break
            os.close(fd)  # its owner released (and removed) the file between our open and our lock: retry
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self.fd = fd

    def _still_linked(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file and free the lock (a no-op when not held)."""
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


__all__ = ["RunLock", "LOCK_FILE", "owner_of"]
