"""Load a YAML spec as plain data with the source position of every value.

Built on PyYAML's event stream rather than its constructors, so that nothing in the
file can name a Python object, aliases and tags are refused, duplicate keys are
errors, and nesting depth is bounded while parsing (the C composer segfaults on deep
input; the pure-Python one raises RecursionError).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import yaml

from ..errors import ErrorRecord, SpecError, format_path
from .textfile import line_col, read_text

MAX_DEPTH = 32       # real specs nest 4 levels deep
MAX_NODES = 10_000   # keys and values; real specs hold under 200. Bounds the schema walk and the error list
SHOWN = 60           # longest piece of user text quoted in a message
_TOO_DEEP = f"nesting deeper than {MAX_DEPTH} levels; a spec needs a handful"

JsonPath: TypeAlias = tuple[str | int, ...]  # ("stages", 1, "blocks") is $.stages[1].blocks

_Parser: type[yaml.SafeLoader] | type[yaml.CSafeLoader]
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
    data: dict[str, Any]
    values: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)
    text: dict[JsonPath, str] = field(default_factory=dict)  # source text of each scalar


def _resolve(value: str) -> object:
    """A plain scalar's value under the YAML 1.2 core schema: null, a bool, an int, a float or the text."""
    if value in _NULL:
        return None
    if value in _BOOL:
        return _BOOL[value]
    if _INT.match(value):
        return int(value)
    if _FLOAT.match(value):
        return float(value)
    return value


def clip(text: str) -> str:
    """User text for a message: quoted, escaped, and cut to SHOWN characters."""
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "...")


def load_yaml(path: str | Path, shown: str | None = None) -> Document:
    """Parse one spec file into a Document; raise SpecError for anything that is not plain YAML data."""
    path = Path(path)
    shown = shown or str(path)
    text = read_text(path, shown)
    builder = _Builder(shown)
    _parse(text, builder)
    return builder.document()


def _parse(text: str, builder: _Builder) -> None:
    """Feed every event of `text` to `builder`, turning the parser's own errors into a SpecError."""
    try:
        for event in yaml.parse(text, Loader=_Parser):
            builder.feed(event)
    except yaml.reader.ReaderError as e:  # a character YAML forbids; it carries an offset, not a mark
        raise builder.fail(line_col(text, e.position), f"character U+{e.character:04X} is not allowed in YAML "
                           f"({e.reason})" if isinstance(e.character, int) else f"YAML error: {e.reason}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and start is not None and mark is not None and start.line < mark.line:
            # The parser notices a missing ':' or a bracket or quote left open only lines later, where it
            # gives up; the mistake is where the key, bracket or quote began (PyYAML's context mark).
            if "simple key" in context:
                problem += " after this key"
            else:
                problem += f" ({context.removeprefix('while ')} that starts here; the parser gave up at " \
                           f"line {mark.line + 1}, column {mark.column + 1})"
            mark = start
        if "nesting depth" in problem:  # libyaml's own bound, which it may meet before ours
            raise builder.fail(mark, _TOO_DEEP) from None
        if mark is not None and text[mark.index:mark.index + 1] == "\t":
            problem += " (a tab; YAML is indented with spaces)"
        raise builder.fail(mark, f"YAML syntax error: {problem}") from None
    except RecursionError:  # defensive: the event parser is iterative
        raise builder.fail(None, _TOO_DEEP) from None


class _Mark(Protocol):
    """A position from PyYAML's Python or C parser: 0-based line, column and character offset."""

    @property
    def line(self) -> int: ...
    @property
    def column(self) -> int: ...
    @property
    def index(self) -> int: ...


def _pos(mark: _Mark | None) -> tuple[int, int]:
    """1-based (line, column) of a mark; (0, 0) where the parser gave none."""
    return (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)


@dataclass
class _Frame:
    """A mapping or sequence being read: what it holds so far, its path, and the key awaiting a value."""

    container: dict[str, Any] | list[Any]
    path: JsonPath
    key: str | None = None  # in a mapping: the key just read, whose value comes next
    first_lines: dict[str, int] = field(default_factory=dict)  # line each key was first seen on

    @property
    def wants_key(self) -> bool:
        return isinstance(self.container, dict) and self.key is None

    def child_path(self) -> JsonPath:
        """Path of the value that comes next: the pending key's in a mapping, the next index in a sequence."""
        if isinstance(self.container, list):
            return self.path + (len(self.container),)
        return self.path + ((self.key,) if self.key is not None else ())

    def attach(self, value: Any) -> None:
        """Add the next value: under the pending key in a mapping, at the end of a sequence."""
        if isinstance(self.container, list):
            self.container.append(value)
        elif self.key is not None:  # always, after a key event; the parser never sends a value without one
            self.container[self.key] = value
            self.key = None


class _Builder:
    """Plain data and positions built from parser events, refusing anything a spec does not need."""

    def __init__(self, shown: str) -> None:
        self.shown = shown
        self.doc = Document(shown, {})
        self.errors: list[ErrorRecord] = []  # duplicate keys: reading goes on to find them all
        self.stack: list[_Frame] = []
        self.root: Any = None
        self.root_mark: _Mark | None = None
        self.documents = 0
        self.nodes = 0

    def record(self, mark: _Mark | tuple[int, int] | None, msg: str, at: JsonPath = ()) -> ErrorRecord:
        line, col = mark if isinstance(mark, tuple) else _pos(mark)
        return ErrorRecord(self.shown, line, col, format_path(at) if at else "", msg)

    def fail(self, mark: _Mark | tuple[int, int] | None, msg: str, at: JsonPath = ()) -> SpecError:
        """The error that ends the read: the duplicate keys found so far, then this problem."""
        return SpecError([*self.errors, self.record(mark, msg, at)])

    def feed(self, event: yaml.Event) -> None:
        """Take one parser event; raise SpecError at the first thing a spec may not hold."""
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise self.fail(event.start_mark, "more than one YAML document; a spec is a single document")
        elif isinstance(event, yaml.AliasEvent):
            raise self.fail(event.start_mark, f"aliases (*{event.anchor}) are not allowed; use `extends` to reuse "
                            "a spec", self.stack[-1].path if self.stack else ())
        elif isinstance(event, yaml.CollectionEndEvent):
            self._close()
        elif isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
            self._node(event)

    def _close(self) -> None:
        done = self.stack.pop()
        if self.stack:
            self.stack[-1].attach(done.container)
        else:
            self.root = done.container

    def _node(self, event: yaml.ScalarEvent | yaml.CollectionStartEvent) -> None:
        self._check_node(event)
        parent = self.stack[-1] if self.stack else None
        if parent is not None and parent.wants_key:
            self._key(parent, event)
            return
        path = parent.child_path() if parent else ()
        if isinstance(event, yaml.ScalarEvent):
            self._scalar(parent, path, event)
        else:
            self._open(parent, path, event)

    def _check_node(self, event: yaml.ScalarEvent | yaml.CollectionStartEvent) -> None:
        """Refuse tags, more than MAX_NODES nodes, and control characters in text."""
        if event.tag is not None:
            raise self.fail(event.start_mark, f"YAML tags ({clip(event.tag)[1:-1]}) are not allowed in a spec")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(event.start_mark, f"more than {MAX_NODES:,} keys and values; a spec holds a few hundred")
        if isinstance(event, yaml.ScalarEvent) and (bad := _CONTROL.search(event.value)):
            top = self.stack[-1] if self.stack else None
            # A key's own text is not shown raw: the error points at its mapping.
            at = () if top is None else top.path if top.wants_key else top.child_path()
            raise self.fail(event.start_mark, f"control character U+{ord(bad.group()):04X} in {clip(event.value)}; "
                            "spec text must be printable", at)

    def _key(self, parent: _Frame, event: yaml.ScalarEvent | yaml.CollectionStartEvent) -> None:
        if not isinstance(event, yaml.ScalarEvent):
            raise self.fail(event.start_mark, "mapping keys must be plain text", parent.path)
        key = event.value
        kpath = parent.path + (key,)
        line, col = _pos(event.start_mark)
        if key in parent.first_lines:
            self.errors.append(self.record(event.start_mark, f"duplicate key {clip(key)} (first defined on line "
                                           f"{parent.first_lines[key]})", kpath))
        parent.first_lines.setdefault(key, line)
        parent.key = key
        self.doc.keys[kpath] = (line, col)

    def _scalar(self, parent: _Frame | None, path: JsonPath, event: yaml.ScalarEvent) -> None:
        plain = event.style in (None, "") and event.implicit[0]
        value = _resolve(event.value) if plain else event.value
        self.doc.values[path] = _pos(event.start_mark)
        self.doc.text[path] = event.value
        if parent is None:
            self.root, self.root_mark = value, event.start_mark
        else:
            parent.attach(value)

    def _open(self, parent: _Frame | None, path: JsonPath, event: yaml.CollectionStartEvent) -> None:
        if len(self.stack) >= MAX_DEPTH:
            raise self.fail(event.start_mark, _TOO_DEEP, path)
        self.doc.values[path] = _pos(event.start_mark)
        if parent is None:
            self.root_mark = event.start_mark
        container: dict[str, Any] | list[Any] = {} if isinstance(event, yaml.MappingStartEvent) else []
        self.stack.append(_Frame(container, path))

    def document(self) -> Document:
        """The Document read, once every event is in; SpecError unless its top level is a mapping."""
        if self.errors:
            raise SpecError(self.errors)
        root, mark = self.root, self.root_mark
        if root is None and mark is not None and self.doc.text.get(()) not in (None, ""):
            raise SpecError([ErrorRecord(self.shown, *_pos(mark), "$", "the top level must be a mapping of spec "
                                         "fields, got null")])
        if self.documents == 0 or root is None:
            raise SpecError([ErrorRecord(self.shown, 1 if mark is None else mark.line + 1, 1, "",
                                         "the file holds no spec (it is empty or only comments)")])
        if not isinstance(root, dict):
            # The value is not echoed: through `extends` the file may be any file, such as /etc/shadow.
            kind = ("a list" if isinstance(root, list) else "true or false" if isinstance(root, bool)
                    else "a number" if isinstance(root, (int, float)) else "a line of text")
            line, col = _pos(mark) if mark is not None else (1, 1)
            raise SpecError([ErrorRecord(self.shown, line, col, "$",
                                         f"the top level must be a mapping of spec fields, got {kind}")])
        self.doc.data = root
        return self.doc


class _Dumper(yaml.SafeDumper):
    """PyYAML's dumper, quoting every string this module would not read back as that string."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # PyYAML quotes what YAML 1.1 would read as another type, but writes `1e3` bare, which YAML 1.2 reads as a float.
    if _resolve(value) != value or isinstance(_resolve(value), bool):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")
    return dumper.represent_str(value)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(data: dict[str, Any]) -> str:
    """Plain block-style YAML for a resolved spec, which load_yaml reads back as the same data."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=100, allow_unicode=True)
