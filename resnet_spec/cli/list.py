"""resnet-spec list: the shipped specs with their size and cost."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argparse import Namespace

    from .common import Subparsers


def register(sub: Subparsers) -> None:
    from .common import add_command
    p = add_command(sub, "list", "List the shipped specs with parameters and GMACs at their input size.",
                    "  resnet-spec list")
    p.set_defaults(func=run)


def run(args: Namespace) -> int:
    from ..api import load_spec
    from ..model.analysis import analyse, totals
    from ..resources import shipped_specs
    print(f"{'name':<22} {'params':>12} {'GMACs':>8}  input  description")
    for name in shipped_specs():
        spec = load_spec(name)
        t = totals(analyse(spec))
        print(f"{name:<22} {t.params:>12,} {t.macs / 1e9:>8.3f}  {spec.input_size:>5}  {spec.description}")
    return 0
