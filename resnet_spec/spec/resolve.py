"""Resolve `extends`: load a chain of spec files and deep-merge them, keeping each value's source position."""
from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ErrorRecord, SpecError, format_path
from ..resources import shipped_specs
from .yamlio import JsonPath, clip, load_yaml

MAX_EXTENDS = 8  # longest chain of `extends`; the shipped specs use 2
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_OWN = ("name", "description", "$schema")  # fields a spec never inherits
T = TypeVar("T")


@dataclass
class Resolved:
    """A merged spec: its data and, by JSON path, the (file, line, column) and source text of each value."""

    file: str
    data: dict[str, Any]
    where: dict[JsonPath, tuple[str, int, int]]
    keys: dict[JsonPath, tuple[str, int, int]]
    text: dict[JsonPath, str]
    chain: list[str]

    def pos(self, path: JsonPath, key: bool = False) -> tuple[str, int, int]:
        """Position of the value (or its key) at path, else of the nearest enclosing value."""
        table = self.keys if key else self.where
        p = tuple(path)
        while p:
            if p in table:
                return table[p]
            if p in self.where:
                return self.where[p]
            p = p[:-1]
        return self.where.get((), (self.file, 1, 1))

    def error(self, path: JsonPath, message: str, key: bool = False) -> ErrorRecord:
        file, line, col = self.pos(path, key)
        return ErrorRecord(file, line, col, format_path(path), message)


def shown_path(path: Path) -> str:
    """A path as the user best recognises it: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def find_spec(ref: str) -> Path:
    """A spec file by path, or a shipped spec by name (`resnet34`)."""
    p = Path(ref)
    if _exists(p) or "/" in ref or ref.endswith((".yaml", ".yml")):
        return p
    shipped = shipped_specs()
    if ref in shipped:
        return shipped[ref]
    close = difflib.get_close_matches(ref, list(shipped), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else "; `resnet-spec list` shows them"
    raise SpecError([ErrorRecord(ref, 0, 0, "", f"no such file, and no shipped spec by that name{hint}")])


def _exists(p: Path) -> bool:
    """Whether p names something; a name the OS cannot even look up (too long, say) counts, so that
    reading it reports why."""
    try:
        os.stat(p)
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True
    return True


def resolve(ref: str | Path) -> Resolved:
    """Load the spec `ref` (path or shipped name) with its whole `extends` chain merged in."""
    path = find_spec(str(ref)) if not isinstance(ref, Path) else ref
    return _resolve(path, shown_path(path), [])


def _resolve(path: Path, shown: str, chain: list[Path]) -> Resolved:
    doc = load_yaml(path, shown)
    where = {p: (shown, *lc) for p, lc in doc.values.items()}
    keys = {p: (shown, *lc) for p, lc in doc.keys.items()}
    own = Resolved(shown, doc.data, where, keys, dict(doc.text), [shown])
    ext = doc.data.get("extends")
    if ext is None or not isinstance(ext, str):
        return own  # a non-string `extends` is reported by the schema
    target = _extends_target(own, path, ext, chain)
    base = _resolve(target, shown_path(target), chain + [path.resolve()])
    return _merge(base, own)


def _extends_target(own: Resolved, path: Path, ext: str, chain: list[Path]) -> Path:
    def fail(msg: str) -> SpecError:
        return SpecError([own.error(("extends",), msg)])

    if _URL.match(ext):
        raise fail(f"{clip(ext)} is a URL; specs are never fetched, give a local path or a shipped name")
    if "/" in ext or ext.endswith((".yaml", ".yml")):
        target = path.parent / ext
        if not _exists(target):
            raise fail(f"{clip(ext)} not found (looked for {clip(shown_path(target))})")
        if os.path.isdir(target):
            raise fail(f"{clip(ext)} is a directory, not a spec file")
    else:
        shipped = shipped_specs()
        if ext not in shipped:
            close = difflib.get_close_matches(ext, list(shipped), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise fail(f"no shipped spec named {clip(ext)}{hint}")
        target = shipped[ext]
    seen = chain + [path.resolve()]
    if target.resolve() in seen:
        loop = seen[seen.index(target.resolve()):] + [target.resolve()]
        raise fail("extends cycle: " + " -> ".join(shown_path(p) for p in loop))
    if len(seen) >= MAX_EXTENDS:
        raise fail(f"extends chain longer than {MAX_EXTENDS} files: "
                   + " -> ".join(shown_path(p) for p in seen + [target]))
    return target


def _merge(base: Resolved, own: Resolved) -> Resolved:
    """`own` laid on `base` (the spec it extends), each value keeping the position of the file that set it."""
    base_data = {k: v for k, v in base.data.items() if k not in _OWN and k != "extends"}
    data: dict[str, Any] = _merge_values(base_data, {k: v for k, v in own.data.items() if k != "extends"})
    where: dict[JsonPath, tuple[str, int, int]] = {}
    keys: dict[JsonPath, tuple[str, int, int]] = {}
    text: dict[JsonPath, str] = {}

    def walk(value: object, path: JsonPath) -> None:
        _pick(where, base.where, own.where, path)
        _pick(keys, base.keys, own.keys, path)
        _pick(text, base.text, own.text, path)
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, path + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, path + (i,))

    walk(data, ())
    return Resolved(own.file, data, where, keys, text, base.chain + own.chain)


def _pick(table: dict[JsonPath, T], base: Mapping[JsonPath, T], own: Mapping[JsonPath, T], path: JsonPath) -> None:
    """Record where the value at `path` came from: the file that extends, where it has it, else its base."""
    if path in own:
        table[path] = own[path]
    elif path in base:
        table[path] = base[path]


def _merge_values(base: Any, over: Any) -> Any:
    """`over` laid on `base`: mappings merge key by key, equally long lists of mappings item by item."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge_values(base[k], v) if k in base else v
        return out
    if (isinstance(base, list) and isinstance(over, list) and len(base) == len(over)
            and all(isinstance(x, dict) for x in base + over)):
        return [_merge_values(b, o) for b, o in zip(base, over, strict=True)]
    return over
