"""Name -> implementation tables: each kind (block, norm, activation, optimizer, exporter...) keeps one.

An unknown name is an error naming the known ones, never a fallback: a typo must not build another network.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def lookup(table: Mapping[str, T], kind: str, name: str) -> T:
    """table[name]; a ValueError naming the kind and every known name when it is missing."""
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table))}") from None
