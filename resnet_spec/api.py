"""The public Python API in one place. Only the spec half is imported eagerly: it never imports torch."""
from __future__ import annotations

from .spec.load import load_spec, validate

__all__ = ["load_spec", "validate"]
