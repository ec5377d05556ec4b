"""Error records shared by the loader, the validator and the CLI."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ErrorRecord:
    """One problem in a spec: where it is and a plain sentence saying what is wrong."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "column": self.column,
                "path": self.path, "message": self.message}


class SpecError(Exception):
    """A spec that cannot be loaded or is invalid; `errors` holds every problem found."""

    def __init__(self, errors: list[ErrorRecord]):
        self.errors = sorted(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def format_path(parts: tuple) -> str:
    """JSON path of a location: ('stages', 1, 'blocks') -> $.stages[1].blocks."""
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out
