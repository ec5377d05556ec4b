"""Writing outputs safely: a temp file in the target's folder, fsync, rename, fsync the folder."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


class OutputError(Exception):
    """An output path that cannot be written."""


def check_writable(path: str | Path) -> Path:
    """Refuse an output path whose folder is missing, is not a folder, or is read-only, before any work."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name")
    if not parent.is_dir():
        raise OutputError(f"{path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: folder {parent} is not writable")
    return path


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call write(f) on a temp file beside `path`, then rename it over `path`.

    A failure at any point leaves `path` as it was (absent, or the old file) and no temp file.
    torch.save itself is not atomic (pytorch#2883).
    """
    path = check_writable(path)
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path
