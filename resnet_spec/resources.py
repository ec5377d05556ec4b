"""Where the schema and the shipped specs live, in a wheel or in a source checkout."""
from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The folder `name` (specs or schemas): inside the package in a wheel, beside it in a checkout."""
    inside = _PKG / name
    return inside if inside.is_dir() else _PKG.parent / name


def schema_path() -> Path:
    return data_dir("schemas") / "resnet-spec.schema.json"


def shipped_specs() -> dict[str, Path]:
    """Shipped spec files by name, sorted."""
    return {p.stem: p for p in sorted(data_dir("specs").glob("*.yaml"))}
