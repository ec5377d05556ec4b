"""resnet-spec validate: check spec files against the schema and the semantic rules, as a linter does."""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argparse import Namespace

    from ..errors import ErrorRecord
    from .common import Subparsers


def register(sub: Subparsers) -> None:
    from .common import add_command
    p = add_command(sub, "validate", "Check spec files; report every problem with file:line:column.",
                    "  resnet-spec validate specs/*.yaml\n"
                    "  resnet-spec validate my_net.yaml --format json > report.json",
                    description=(
                        "Check spec files against the schema and the semantic rules, and report every problem at "
                        "once, sorted by position, on standard output, then a summary line. A spec over build's "
                        "default caps (parameters, blocks) gets a warning, which does not fail it. Exit 0 when "
                        "every file is valid, 1 when any is not."))
    p.add_argument("files", nargs="+", metavar="FILE", help="spec files (or shipped spec names)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.set_defaults(func=run)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def run(args: Namespace) -> int:
    from ..model.limits import DEFAULT_LIMITS
    from ..spec.load import lint
    results: dict[str, tuple[list[ErrorRecord], list[ErrorRecord]]] = {
        f: lint(f, DEFAULT_LIMITS.max_params, DEFAULT_LIMITS.max_blocks) for f in args.files}
    n_errors = sum(len(errs) for errs, _ in results.values())
    n_warnings = sum(len(warns) for _, warns in results.values())
    bad = sum(1 for errs, _ in results.values() if errs)
    if args.format == "json":
        json.dump({f: {"valid": not errs, "errors": [e.to_dict() for e in errs],
                       "warnings": [w.to_dict() for w in warns]} for f, (errs, warns) in results.items()},
                  sys.stdout, indent=2)
        print()
    else:
        for f, (errs, warns) in results.items():
            for e in errs:
                print(e)
            for w in warns:
                print(_warning(w))
            if not errs:
                print(f"{f}: ok")
        of = f" (of {len(results)})" if bad < len(results) else ""
        summary = (f"{_plural(n_errors, 'error')} in {_plural(bad, 'file')}{of}" if n_errors
                   else f"{_plural(len(results), 'file')} valid")
        if n_warnings:
            summary += f", {_plural(n_warnings, 'warning')}"
        print(summary)
    return 1 if n_errors else 0


def _warning(w: ErrorRecord) -> str:
    """A warning as an error record's line, with `warning:` before its message."""
    where = f"{w.file}:{w.line}:{w.column}" if w.line else w.file
    path = f" {w.path}:" if w.path else ""
    return f"{where}:{path} warning: {w.message}"
