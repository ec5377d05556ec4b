"""Load and validate specs: the torch-free half of the public API."""
from __future__ import annotations

from pathlib import Path

from ..errors import ErrorRecord, SpecError
from . import rules, schema
from .resolve import Resolved, resolve
from .types import ResNetSpec, from_data


def _load(ref: str | Path) -> tuple[ResNetSpec | None, Resolved | None, list[ErrorRecord]]:
    """The typed spec (None if unreadable or schema-invalid), its resolved data (None if unreadable), every problem."""
    try:
        res = resolve(ref)
    except SpecError as e:
        return None, None, e.errors
    errors = schema.check(res)
    if errors:
        return None, res, errors
    name = Path(res.file).stem
    spec = from_data(res.data, name)
    return spec, res, sorted(rules.check(spec, res))


def load_spec(ref: str | Path) -> ResNetSpec:
    """Load, resolve and validate a spec file or shipped spec name; raise SpecError listing every problem."""
    spec, _, errors = _load(ref)
    if spec is None or errors:
        raise SpecError(errors)
    return spec


def validate(ref: str | Path) -> list[ErrorRecord]:
    """Every problem in a spec (file path or shipped name); empty when it is valid."""
    return _load(ref)[2]
