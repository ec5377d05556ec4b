"""The library's errors: one base class, one subclass per kind of trouble, and the spec error record.

The library raises these and never names a command-line flag; the CLI (resnet_spec.cli) maps each
class to an exit status and adds the flag that changes the outcome.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "column": self.column,
                "path": self.path, "message": self.message}


class ResNetSpecError(Exception):
    """Base of every error resnet-spec raises on purpose: bad input, not a bug."""


class SpecError(ResNetSpecError):
    """A spec that cannot be loaded or is invalid; `errors` holds every problem found."""

    def __init__(self, errors: list[ErrorRecord]) -> None:
        self.errors = sorted(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class InputError(ResNetSpecError):
    """A bad input other than a spec: a file, an image folder, a checkpoint, an argument value.

    `setting` names the argument the message is about (a TrainConfig field, a build_model argument),
    so a front end can word it as its own option.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class LimitError(ResNetSpecError):
    """A spec, input size or batch whose cost is over a cap, found before any allocation.

    `limit` names the Limits field that was exceeded, or is None where no cap could allow it.
    """

    def __init__(self, message: str, *, limit: str | None = None) -> None:
        super().__init__(message)
        self.limit = limit


class OutputError(ResNetSpecError):
    """An output path that cannot be written, or a write that failed and was rolled back."""


class PeerError(ResNetSpecError):
    """A distributed run that lost a peer: another rank died, so this one's collective call failed."""


def format_path(parts: tuple[str | int, ...]) -> str:
    """JSON path of a location: ('stages', 1, 'blocks') -> $.stages[1].blocks."""
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out
