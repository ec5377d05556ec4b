"""Writing outputs safely: a temp file in the target's folder, fsync, rename, fsync the folder."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import OutputError


def check_writable(path: str | Path) -> Path:
    """Refuse an output path whose folder is missing, is not a folder, or is read-only, before any work."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name")
    if not parent.exists():
        raise OutputError(f"{path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"{path}: {parent} is not a folder")
    # As root, access() says yes to any folder on a writable filesystem, and the write then works.
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: folder {parent} is not writable")
    return path


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call write(f) on a temp file beside `path` (its result is ignored), then rename it over `path`.

    A failure at any point leaves `path` as it was (absent, or the old file) and no temp file,
    and is raised as OutputError. torch.save itself is not atomic (pytorch#2883).
    """
    path = check_writable(path)
    parent = path.parent if str(path.parent) else Path(".")
    kept = "the old file is unchanged" if path.exists() else "nothing was written"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise OutputError(f"{path}: cannot create a file in {parent}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, Exception):
            # torch.save turns a failed write (a full disk) into a RuntimeError; any failure here is a failed write.
            raise OutputError(f"{path}: writing failed ({_reason(e)}); {kept}") from e
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


def _reason(e: Exception) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return first[:200]
