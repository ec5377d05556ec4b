"""Load a YAML spec as plain data with the source position of every value.

Built on PyYAML's event stream rather than its constructors, so that nothing in the
file can name a Python object, aliases and tags are refused, duplicate keys are
errors, and nesting depth is bounded while parsing (the C composer segfaults on deep
input; the pure-Python one raises RecursionError).
"""
from __future__ import annotations

import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import ErrorRecord, SpecError, format_path

MAX_BYTES = 1 << 20  # a spec is a few hundred bytes; 1 MiB leaves room for comments
MAX_DEPTH = 32       # real specs nest 4 levels deep
MAX_NODES = 10_000   # keys and values; real specs hold under 200. Bounds the schema walk and the error list
SHOWN = 60           # longest piece of user text quoted in a message

try:
    _Parser = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _Parser = yaml.SafeLoader

# YAML 1.2 core schema: only these plain scalars are not strings. YAML 1.1's yes/no/on/off
# booleans, 0x/0o/leading-zero integers and base-60 numbers stay text, so the schema
# rejects them with the text quoted instead of silently reading `type: no` as False.
# A leading zero (`0755`, `007`) also stays text: YAML 1.1 reads it as octal, YAML 1.2 as decimal,
# so its meaning is not certain.
_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|(0|[1-9][0-9]*)(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
# Escapes such as "\e" or "\u202e" can put terminal control sequences or bidi overrides into
# a name or description that is later printed; no spec needs them.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_NULL = {"", "~", "null", "Null", "NULL"}
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}


@dataclass
class Document:
    """A loaded YAML mapping with the (line, column) of each value and key, by path."""

    file: str
    data: dict
    values: dict[tuple, tuple[int, int]] = field(default_factory=dict)
    keys: dict[tuple, tuple[int, int]] = field(default_factory=dict)
    text: dict[tuple, str] = field(default_factory=dict)  # source text of each scalar


def _resolve(value: str) -> object:
    if value in _NULL:
        return None
    if value in _BOOL:
        return _BOOL[value]
    if _INT.match(value):
        return int(value)
    if _FLOAT.match(value):
        return float(value)
    return value


def _pos(mark) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


def clip(text: str) -> str:
    """User text for a message: quoted, escaped, and cut to SHOWN characters."""
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "...")


def _read_text(path: Path, shown: str) -> str:
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
        line, col = _line_col(raw, e.start)
        raise fail(f"invalid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})", line, col) from None


def _line_col(text: bytes | str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    nl = b"\n" if isinstance(before, bytes) else "\n"
    return before.count(nl) + 1, len(before) - (before.rfind(nl) + 1) + 1


def load_yaml(path: str | Path, shown: str | None = None) -> Document:
    """Parse one spec file into a Document; raise SpecError for anything that is not plain YAML data."""
    path = Path(path)
    shown = shown or str(path)
    text = _read_text(path, shown)
    doc = Document(shown, {})
    errors: list[ErrorRecord] = []

    def err(mark, msg: str, at: tuple = ()) -> None:
        line, col = _pos(mark) if mark is not None else (0, 0)
        errors.append(ErrorRecord(shown, line, col, format_path(at) if at else "", msg))

    # Each stack entry: [container, path, pending key, first-seen lines of keys]
    stack: list[list] = []
    root: object = None
    root_mark = None
    documents = nodes = 0
    try:
        for event in yaml.parse(text, Loader=_Parser):
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    err(event.start_mark, "more than one YAML document; a spec is a single document")
                    break
                continue
            if isinstance(event, yaml.AliasEvent):
                err(event.start_mark, f"aliases (*{event.anchor}) are not allowed; use `extends` to reuse a spec",
                    stack[-1][1] if stack else ())
                break
            if not isinstance(event, (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent,
                                      yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                continue
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                done = stack.pop()
                if stack:
                    _attach(stack[-1], done[0])
                else:
                    root = done[0]
                continue
            if event.tag is not None:
                err(event.start_mark, f"YAML tags ({clip(event.tag)[1:-1]}) are not allowed in a spec")
                break
            nodes += 1
            if nodes > MAX_NODES:
                err(event.start_mark, f"more than {MAX_NODES:,} keys and values; a spec holds a few hundred")
                break
            if isinstance(event, yaml.ScalarEvent) and _CONTROL.search(event.value):
                bad = _CONTROL.search(event.value).group()
                top = stack[-1] if stack else None
                is_key = top is not None and isinstance(top[0], dict) and top[2] is None
                at = () if top is None else top[1] if is_key else _child_path(top)  # a key's own text is not shown raw
                err(event.start_mark, f"control character U+{ord(bad):04X} in {clip(event.value)}; "
                    "spec text must be printable", at)
                break
            parent = stack[-1] if stack else None
            if parent is not None and isinstance(parent[0], dict) and parent[2] is None:
                # This event is a mapping key.
                if not isinstance(event, yaml.ScalarEvent):
                    err(event.start_mark, "mapping keys must be plain text", parent[1])
                    break
                key = event.value
                kpath = parent[1] + (key,)
                if key in parent[3]:
                    err(event.start_mark, f"duplicate key {clip(key)} (first defined on line {parent[3][key]})",
                        kpath)
                parent[3].setdefault(key, event.start_mark.line + 1)
                parent[2] = key
                doc.keys[kpath] = _pos(event.start_mark)
                continue
            path = _child_path(parent) if parent else ()
            if isinstance(event, yaml.ScalarEvent):
                plain = event.style in (None, "") and event.implicit[0]
                value = _resolve(event.value) if plain else event.value
                doc.values[path] = _pos(event.start_mark)
                doc.text[path] = event.value
                if parent is None:
                    root, root_mark = value, event.start_mark
                else:
                    _attach(parent, value)
                continue
            # Mapping or sequence start.
            if len(stack) >= MAX_DEPTH:
                err(event.start_mark, f"nesting deeper than {MAX_DEPTH} levels; a spec needs a handful", path)
                break
            doc.values[path] = _pos(event.start_mark)
            if parent is None:
                root_mark = event.start_mark
            container = {} if isinstance(event, yaml.MappingStartEvent) else []
            stack.append([container, path, None, {}])
    except yaml.reader.ReaderError as e:  # a character YAML forbids; it carries an offset, not a mark
        line, col = _line_col(text, e.position)
        errors.append(ErrorRecord(shown, line, col, "", f"character U+{e.character:04X} is not allowed in YAML "
                                  f"({e.reason})" if isinstance(e.character, int) else f"YAML error: {e.reason}"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if "nesting depth" in problem:  # libyaml's own bound, which it may meet before ours
            problem = f"nesting deeper than {MAX_DEPTH} levels; a spec needs a handful"
            err(mark, problem)
        else:
            if mark is not None and text[mark.index:mark.index + 1] == "\t":
                problem += " (a tab; YAML is indented with spaces)"
            err(mark, f"YAML syntax error: {problem}")
    except RecursionError:  # defensive: the event parser is iterative
        err(None, f"nesting deeper than {MAX_DEPTH} levels; a spec needs a handful")
    if errors:
        raise SpecError(errors)
    if root is None and root_mark is not None and doc.text.get(()) not in (None, ""):
        raise SpecError([ErrorRecord(shown, *_pos(root_mark), "$", "the top level must be a mapping of spec fields, "
                                     "got null")])
    if documents == 0 or root is None:
        raise SpecError([ErrorRecord(shown, 1 if root_mark is None else root_mark.line + 1, 1, "",
                                     "the file holds no spec (it is empty or only comments)")])
    if not isinstance(root, dict):
        # The value is not echoed: through `extends` the file may be any file, such as /etc/shadow.
        kind = ("a list" if isinstance(root, list) else "true or false" if isinstance(root, bool)
                else "a number" if isinstance(root, (int, float)) else "a line of text")
        line, col = _pos(root_mark) if root_mark is not None else (1, 1)
        raise SpecError([ErrorRecord(shown, line, col, "$", f"the top level must be a mapping of spec fields, got {kind}")])
    doc.data = root
    return doc


def _child_path(parent: list) -> tuple:
    container, path, key, _ = parent
    return path + ((key,) if isinstance(container, dict) else (len(container),))


def _attach(parent: list, value: object) -> None:
    container = parent[0]
    if isinstance(container, dict):
        container[parent[2]] = value
        parent[2] = None
    else:
        container.append(value)


class _Dumper(yaml.SafeDumper):
    """PyYAML's dumper, quoting every string this module would not read back as that string."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # PyYAML quotes what YAML 1.1 would read as another type, but writes `1e3` bare, which YAML 1.2 reads as a float.
    if _resolve(value) != value or isinstance(_resolve(value), bool):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")
    return dumper.represent_str(value)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(data: dict) -> str:
    """Plain block-style YAML for a resolved spec, which load_yaml reads back as the same data."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=100, allow_unicode=True)
