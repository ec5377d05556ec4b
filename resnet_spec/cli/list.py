"""resnet-spec list: the shipped specs with their size and cost."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from argparse import Namespace

    from .common import Subparsers


def register(sub: Subparsers) -> None:
    from .common import add_command
    p = add_command(sub, "list", "List the shipped specs with parameters and GMACs at their input size.",
                    "  resnet-spec list\n  resnet-spec list --format json")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.set_defaults(func=run)


def run(args: Namespace) -> int:
    from ..api import load_spec
    from ..model.analysis import analyse, totals
    from ..resources import shipped_specs
    rows: list[dict[str, Any]] = []
    for name, path in shipped_specs().items():
        spec = load_spec(name)
        t = totals(analyse(spec))
        rows.append({"name": name, "path": str(path), "params": t.params, "macs": t.macs,
                     "input_size": spec.input_size, "description": spec.description})
    if args.format == "json":
        import json
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<22} {'params':>12} {'GMACs':>8}  input  description")
    for r in rows:
        print(f"{r['name']:<22} {r['params']:>12,} {r['macs'] / 1e9:>8.3f}  {r['input_size']:>5}  {r['description']}")
    return 0
