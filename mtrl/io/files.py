"""File-system checks done before any work starts, so a bad path ends in one line instead of lost results."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from mtrl.errors import UserError


def _reason(err: OSError) -> str:
    return {
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.ENOTDIR: "a part of the path is a file",
        errno.EEXIST: "a file is in the way",
        errno.ENOSPC: "no space left",
    }.get(err.errno, err.strerror or type(err).__name__)


def check_directory(path: str | Path, key: str) -> Path:
    """Create directory `path` if needed and prove it writable with a probe file; one-line UserError if not."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{key}='{path}' is a file, not a directory; choose another {key}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe_", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"{key}='{path}' cannot be written ({_reason(err)}); choose another {key}") from None
    return path


def check_writable(path: str | Path, key: str) -> Path:
    """Check that file `path` can be written (its folder is created and probed; the file itself is not touched)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{key}='{path}' is a directory; give a file path")
    check_directory(path.parent, f"{key} folder" if key else "folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{key}='{path}' cannot be written (permission denied); choose another {key}")
    return path
