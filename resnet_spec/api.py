"""The public Python API in one place. Only the spec half is imported eagerly: it never imports torch."""
from __future__ import annotations

from .resources import shipped_specs
from .spec.load import load_spec, validate

__all__ = ["list_specs", "load_spec", "validate"]


def list_specs() -> list[str]:
    """The names of the shipped specs, sorted: each one is accepted wherever a spec file is."""
    return list(shipped_specs())
