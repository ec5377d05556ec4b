"""Read a spec file's text, refusing what is not a small UTF-8 text file before any YAML parsing."""
from __future__ import annotations

import stat
from pathlib import Path

from ..errors import ErrorRecord, SpecError

MAX_BYTES = 1 << 20  # a spec is a few hundred bytes; 1 MiB leaves room for comments


def read_text(path: Path, shown: str) -> str:
    """The file's text; SpecError (naming it as `shown`) for a folder, pipe, huge, binary or non-UTF-8 file."""
    def fail(msg: str, line: int = 0, col: int = 0) -> SpecError:
        return SpecError([ErrorRecord(shown, line, col, "", msg)])

    try:
        st = path.stat()
    except FileNotFoundError:
        raise fail("no such file") from None
    except OSError as e:  # a name too long, a loop of links, a folder we may not enter
        raise fail(f"cannot read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise fail("is a directory, not a spec file")
    if not stat.S_ISREG(st.st_mode):
        # A FIFO would block the read forever; a device could be endless.
        raise fail("is not a regular file (a pipe, socket or device), not a spec file")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise fail(f"cannot read: {e.strerror or e}") from None
    if len(raw) > MAX_BYTES:
        raise fail(f"file is larger than the {MAX_BYTES:,}-byte (1 MiB) limit for a spec")
    if b"\x00" in raw:
        raise fail("binary file (contains NUL bytes), not a YAML spec")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line, col = line_col(raw, e.start)
        raise fail(f"invalid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})", line, col) from None


def line_col(text: bytes | str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of an offset: columns count bytes in bytes, characters in text."""
    if isinstance(text, bytes):
        raw = text[:offset]
        return raw.count(b"\n") + 1, len(raw) - (raw.rfind(b"\n") + 1) + 1
    before = text[:offset]
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
