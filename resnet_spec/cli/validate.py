"""resnet-spec validate: check spec files against the schema and the semantic rules."""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argparse import Namespace

    from .common import Subparsers


def register(sub: Subparsers) -> None:
    from .common import add_command
    p = add_command(sub, "validate", "Check spec files; report every problem with file:line:column.",
                    "  resnet-spec validate specs/*.yaml\n"
                    "  resnet-spec validate my_net.yaml --format json")
    p.add_argument("files", nargs="+", metavar="FILE", help="spec files (or shipped spec names)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.set_defaults(func=run)


def run(args: Namespace) -> int:
    from ..api import validate
    results = {f: validate(f) for f in args.files}
    if args.format == "json":
        json.dump({f: {"valid": not errs, "errors": [e.to_dict() for e in errs]} for f, errs in results.items()},
                  sys.stdout, indent=2)
        print()
    else:
        for f, errs in results.items():
            for e in errs:
                print(e, file=sys.stderr)
            if not errs:
                print(f"{f}: ok")
    return 1 if any(results.values()) else 0
