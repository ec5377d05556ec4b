"""Load and validate specs: the torch-free half of the public API."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from ..errors import ErrorRecord, SpecError
from . import rules, schema
from .resolve import Resolved, resolve
from .types import ResNetSpec, from_data
from .yamlio import JsonPath


def _load(ref: str | Path) -> tuple[ResNetSpec | None, Resolved | None, list[ErrorRecord]]:
    """The typed spec (None if unreadable or schema-invalid), its resolved data (None if unreadable), every problem."""
    try:
        res = resolve(ref)
    except SpecError as e:
        return None, None, e.errors
    errors = schema.check(res)
    name = Path(res.file).stem
    if not errors:
        spec = from_data(res.data, name)
        return spec, res, sorted(rules.check(spec, res))
    return None, res, sorted(set(errors) | set(_lenient_rules(res, name)))


def _lenient_rules(res: Resolved, name: str) -> list[ErrorRecord]:
    """The rule errors of a spec with schema errors, checked on what remains once the refused fields are dropped.

    So that every mistake is reported at once. Rule errors at or under a dropped field are left out:
    there the rules saw a default, not what was written.
    """
    pruned = schema.prune(res.data)
    if pruned is None:
        return []
    data, dropped = pruned
    spec = from_data(data, name)
    kept = replace(res, data=data)
    out: list[ErrorRecord] = []
    for e in rules.check(spec, kept):
        path = _parts(e.path)
        if not any(path[:len(d)] == d or d[:len(path)] == path for d in dropped):
            out.append(e)
    return out


def _parts(path: str) -> JsonPath:
    """('stages', 1, 'blocks') from $.stages[1].blocks."""
    return tuple(int(index) if index else key for key, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path))


def load_spec(ref: str | Path) -> ResNetSpec:
    """Load, resolve and validate a spec file or shipped spec name; raise SpecError listing every problem."""
    spec, _, errors = _load(ref)
    if spec is None or errors:
        raise SpecError(errors)
    return spec


def validate(ref: str | Path) -> list[ErrorRecord]:
    """Every problem in a spec (file path or shipped name); empty when it is valid."""
    return _load(ref)[2]


def lint(ref: str | Path, max_params: int, max_blocks: int) -> tuple[list[ErrorRecord], list[ErrorRecord]]:
    """Every problem in a spec, and warnings where a valid one is over the given caps on parameters or blocks."""
    spec, res, errors = _load(ref)
    if spec is None or res is None or errors:
        return errors, []
    return errors, rules.over_caps(spec, res, max_params, max_blocks)
