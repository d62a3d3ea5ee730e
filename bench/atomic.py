"""Atomic file writes: a temporary file in the target's folder, flushed to disk, given the mode the
umask allows (0644 under 022, as `open` would), then renamed over the target, so a reader sees the
old file or the new one and never a partial one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .errors import UserError


def umask() -> int:
    """This process's umask (read without changing it where the system allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ensure_folder(folder: Path, what: str, hint: str) -> Path:
    """Create `folder` (and its parents) or fail with one line naming `what`, why, and `hint`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {what} {folder} ({err.strerror}); {hint}") from None
    return folder


def check_writable(folder: Path, what: str, hint: str) -> Path:
    """`ensure_folder`, then prove that a file can be created in it (before hours of work)."""
    ensure_folder(folder, what, hint)
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".writable.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"cannot write to {what} {folder} ({err.strerror}); {hint}") from None
    return folder


def write_atomic(path: Path, write: Callable[[IO], None], mode: str = "wb", hint: str = "",
                 **open_kwargs) -> None:
    """Call `write(handle)` on a temporary file next to `path`, then rename it onto `path`.
    A folder where no file can be created is a UserError ending with `hint` (the fix)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise UserError(f"cannot write to {path.parent} ({err.strerror}); {hint}") from None
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            write(handle)
            handle.flush()
            os.chmod(handle.fileno(), 0o666 & ~umask())  # mkstemp makes 0600
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
