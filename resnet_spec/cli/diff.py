"""resnet-spec diff: what changed between two specs, field by field, and what it costs per stage."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argparse import Namespace

    from ..tools.diff import FieldChange, StageCost
    from .common import Subparsers


def register(sub: Subparsers) -> None:
    from .common import add_command
    p = add_command(sub, "diff", "Show what changed between two specs, field by field, and its cost per stage.",
                    "  resnet-spec diff resnet50 resnext50_32x4d\n"
                    "  resnet-spec diff specs/resnet50.yaml my_resnet50.yaml --format json",
                    description=(
                        "Show what changed between two specs: every field that differs once `extends` and defaults "
                        "are resolved, then parameters and MACs per stage. `name` and `description` are compared "
                        "only with --all. Exit 0 when nothing differs, 1 when something does, 2 when a spec cannot "
                        "be read or is invalid (as diff(1))."))
    p.add_argument("a", metavar="A", help="a spec file, or the name of a shipped spec")
    p.add_argument("b", metavar="B", help="a spec file, or the name of a shipped spec")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.add_argument("--all", action="store_true",
                   help="also compare name and description, which are ignored by default")
    p.set_defaults(func=run)


def run(args: Namespace) -> int:
    from ..api import load_spec
    from ..tools.diff import field_changes, stage_costs
    a, b = load_spec(args.a), load_spec(args.b)
    changes = field_changes(a, b, labels=args.all)
    costs = stage_costs(a, b)
    if args.format == "json":
        from ..tools.diff import ABSENT
        print(json.dumps({
            "a": a.name, "b": b.name, "same": not changes,
            "fields": [{"path": c.path, **({"a": c.a} if c.a is not ABSENT else {}),
                        **({"b": c.b} if c.b is not ABSENT else {})} for c in changes],
            "stages": [{"name": c.name, "params_a": c.params_a, "params_b": c.params_b,
                        "macs_a": c.macs_a, "macs_b": c.macs_b} for c in costs]}, indent=2))
    else:
        print(_text(a.name, b.name, changes, costs))
    return 1 if changes else 0


def _value(v: object) -> str:
    from ..spec.yamlwrite import flow
    from ..tools.diff import ABSENT
    return v if v is ABSENT else flow(v)


def _change(x: int | None, y: int | None, scale: float, fmt: str) -> tuple[str, str, str]:
    def show(v: int | None) -> str:
        return "-" if v is None else format(v / scale if scale != 1 else v, fmt)

    if x is None or y is None or x == y:
        return show(x), show(y), "" if x == y else ("added" if x is None else "removed")
    pct = f" ({(y - x) / x:+.1%})" if x else ""
    return show(x), show(y), format((y - x) / scale if scale != 1 else y - x, "+" + fmt) + pct


def _text(na: str, nb: str, changes: list[FieldChange], costs: list[StageCost]) -> str:
    lines = [f"--- {na}", f"+++ {nb}"]
    if changes:
        width = max(len(c.path) for c in changes)
        lines += [f"  {c.path:<{width}}  {_value(c.a)} -> {_value(c.b)}" for c in changes]
    else:
        lines.append("  no field differs")
    lines.append("")
    lines.append(f"{'':<10} {'params A':>13} {'params B':>13} {'change':>22}   {'MMACs A':>9} {'MMACs B':>9} "
                 f"{'change':>20}")
    totals = [0, 0, 0, 0]
    for c in costs:
        pa, pb, pd = _change(c.params_a, c.params_b, 1, ",")
        ma, mb, md = _change(c.macs_a, c.macs_b, 1e6, ".1f")
        lines.append(f"{c.name:<10} {pa:>13} {pb:>13} {pd:>22}   {ma:>9} {mb:>9} {md:>20}")
        for i, v in enumerate((c.params_a, c.params_b, c.macs_a, c.macs_b)):
            totals[i] += v or 0
    pa, pb, pd = _change(totals[0], totals[1], 1, ",")
    ma, mb, md = _change(totals[2], totals[3], 1e6, ".1f")
    lines.append(f"{'total':<10} {pa:>13} {pb:>13} {pd:>22}   {ma:>9} {mb:>9} {md:>20}")
    return "\n".join(lines)
