"""resnet-spec schema: print the JSON Schema of spec files."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argparse import Namespace

    from .common import Subparsers


def register(sub: Subparsers) -> None:
    from .common import add_command
    p = add_command(sub, "schema", "Print the JSON Schema that spec files follow.",
                    "  resnet-spec schema > resnet-spec.schema.json")
    p.set_defaults(func=run)


def run(args: Namespace) -> int:
    from ..resources import schema_path
    print(schema_path().read_text(encoding="utf-8"), end="")
    return 0
