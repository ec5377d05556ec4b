"""Check a resolved spec against schemas/resnet-spec.schema.json, with plain messages."""
from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..errors import ErrorRecord
from ..resources import schema_path
from .resolve import Resolved
from .yamlio import SHOWN, JsonPath, clip

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """schemas/resnet-spec.schema.json, read once; callers must not change it."""
    with schema_path().open(encoding="utf-8") as f:
        schema: dict[str, Any] = json.load(f)
    return schema


@lru_cache(maxsize=1)
def _validator() -> Validator:
    """A Draft 2020-12 validator for the spec schema, whose integers exclude floats such as 2.0."""
    import jsonschema
    from jsonschema import Draft202012Validator

    # JSON Schema calls 2.0 an integer; a spec that writes `stride: 2.0` is refused instead,
    # so that a float never reaches a torch constructor.
    checker = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool))
    cls = jsonschema.validators.extend(Draft202012Validator, type_checker=checker)
    return cls(load_schema())


def defaults(name: str) -> dict[str, Any]:
    """The `default` of each property of $defs[name] (or of the top level, name='')."""
    schema = load_schema()
    node = schema if not name else schema["$defs"][name]
    out: dict[str, Any] = {}
    for k, v in node.get("properties", {}).items():
        if "$ref" in v:
            v = {**schema["$defs"][v["$ref"].rsplit("/", 1)[1]], **v}
        if "default" in v:
            out[k] = v["default"]
    return out


def check(spec: Resolved) -> list[ErrorRecord]:
    """Every schema violation in the resolved spec, one record each."""
    out: list[ErrorRecord] = []
    for e in _validator().iter_errors(spec.data):
        out.extend(_records(spec, e))
    return sorted(set(out))


def prune(data: dict[str, Any]) -> tuple[dict[str, Any], list[JsonPath]] | None:
    """A copy of data without the fields the schema refuses, and their paths; None where none is left valid.

    What the rules can still check in a spec with schema errors: every refused value is dropped (so its
    default applies), or the mapping key above it where the value is a list item or a missing key.
    """
    data = copy.deepcopy(data)
    dropped: list[JsonPath] = []
    for _ in range(4):  # each round removes at least one key; nested problems surface in later rounds
        errors = list(_validator().iter_errors(data))
        if not errors:
            return data, dropped
        for e in errors:
            path = list(e.absolute_path)
            if e.validator == "additionalProperties" and isinstance(e.instance, dict):
                allowed = e.schema.get("properties", {})
                for k in [k for k in e.instance if k not in allowed]:
                    e.instance.pop(k, None)
                    dropped.append((*path, k))
                continue
            if e.validator == "required":
                path = path[:-1] if path and isinstance(path[-1], str) else path
            while path and isinstance(path[-1], int):
                path.pop()
            if not path:
                return None
            parent: Any = data
            for part in path[:-1]:
                try:
                    parent = parent[part]
                except (KeyError, IndexError, TypeError):
                    parent = None
                    break
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
                dropped.append(tuple(path))
    return None


def _show(spec: Resolved, path: JsonPath, value: object) -> str:
    """A value as the user wrote it."""
    if path in spec.text and not isinstance(value, (dict, list)):
        return clip(spec.text[path]) if isinstance(value, str) else spec.text[path][:SHOWN]
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return json.dumps(value)


_TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "text", "boolean": "true or false",
               "object": "a mapping", "array": "a list", "null": "null"}


def _suggest(word: object, options: Sequence[object]) -> str:
    """'; did you mean ...?' for the nearest option: the same but for case, one it abbreviates, or a near spelling."""
    if not isinstance(word, str) or not word:
        return ""
    names = [str(o) for o in options if o is not None and str(o) != word]
    lower = {n.lower(): n for n in names}
    folded = word.lower()
    close = ([lower[folded]] if folded in lower
             else [n for n in names if n.lower().startswith(folded)][:1] if len(folded) >= 2
             else [])
    if not close and len(folded) >= 2:  # an abbreviation such as bn for batchnorm: its letters in order
        close = [n for n in names if n.lower()[0] == folded[0] and _in_order(folded, n.lower())][:1]
    if not close:
        close = [lower[c] for c in difflib.get_close_matches(folded, list(lower), n=1, cutoff=0.5)]
    return f"; did you mean '{close[0]}'?" if close else ""


def _in_order(letters: str, word: str) -> bool:
    """Whether every letter of `letters` appears in `word`, in order."""
    it = iter(word)
    return all(c in it for c in letters)


def _records(spec: Resolved, e: ValidationError) -> list[ErrorRecord]:
    """The error records of one schema violation, worded for a person."""
    path = tuple(e.absolute_path)
    v, kw, val = e.instance, e.validator, e.validator_value
    shown = _show(spec, path, v)
    if kw == "additionalProperties":
        allowed = sorted(e.schema.get("properties", {}))
        return [spec.error(path + (k,), f"unknown key {clip(str(k))}{_suggest(k, allowed) or ''}", key=True)
                for k in v if k not in allowed]
    if kw == "required":
        return [spec.error(path, f"missing required key '{k}'") for k in val if k not in v]
    if kw == "type":
        types = [val] if isinstance(val, str) else val
        want = " or ".join(_TYPE_NAMES[t] for t in types)
        got = f"the text {shown}" if isinstance(v, str) else shown
        hint = ""
        if isinstance(v, str) and ("integer" in types or "number" in types):
            hint = " (write numbers in plain decimal)"
        if isinstance(v, str) and "boolean" in types:
            hint = " (only true and false are booleans)"
        return [spec.error(path, f"expected {want}, got {got}{hint}")]
    if kw == "enum":
        opts = ", ".join("null" if o is None else repr(o) if isinstance(o, str) else str(o) for o in val)
        return [spec.error(path, f"{shown} is not one of {opts}{_suggest(v, val)}")]
    if kw == "const":
        return [spec.error(path, f"must be {json.dumps(val)}, got {shown}")]
    messages = {
        "minimum": f"{shown} is less than the minimum of {val}",
        "maximum": f"{shown} is more than the maximum of {val}",
        "exclusiveMinimum": f"{shown} must be more than {val}",
        "exclusiveMaximum": f"{shown} must be less than {val}",
        "minItems": f"needs at least {val} item{'s' if val != 1 else ''}",
        "maxItems": f"has {len(v) if isinstance(v, list) else '?'} items; the maximum is {val}",
        "uniqueItems": "items must not repeat",
        "minLength": "must not be empty",
        "maxLength": f"is longer than {val} characters",
    }
    return [spec.error(path, messages.get(kw, e.message))]
