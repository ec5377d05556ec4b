"""What changed between two specs: field by field after `extends` and defaults are resolved, and per stage in cost."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import format_path
from ..spec.types import ResNetSpec, merge_block, resolve_block  # the one place block defaults are resolved

ABSENT = "(absent)"  # a field or stage that one of the two specs does not have


@dataclass(frozen=True)
class FieldChange:
    """One field whose value differs; `a` or `b` is ABSENT where only the other spec has it."""

    path: str
    a: object
    b: object


@dataclass(frozen=True)
class StageCost:
    """A row of the analysis in both specs; None where only one spec has that row."""

    name: str
    params_a: int | None
    params_b: int | None
    macs_a: int | None
    macs_b: int | None


def effective(spec: ResNetSpec) -> dict[str, Any]:
    """The spec's fields as data, with every default filled in, in the spec language's own layout.

    The top-level `block` is shown whole; a stage's `block` and `overrides` only as written, since
    they are changes to it.
    """
    from ..spec.schema import defaults
    data = spec.data
    block = data.get("block") or {}
    stages = [{**s, **{k: v for k, v in defaults("stage").items() if k not in s}} for s in data["stages"]]
    return {
        "name": spec.name, "description": spec.description,
        "input": {"channels": spec.in_channels, "size": spec.input_size},
        "preact": spec.preact,
        "stem": dataclasses.asdict(spec.stem),
        # The top-level block typed as the builder sees it (expansion null resolved by block type).
        "block": dataclasses.asdict(resolve_block(merge_block(defaults("block"), block))),
        "stages": stages,
        "head": dataclasses.asdict(spec.head) if spec.head else None,
        "norm": dataclasses.asdict(spec.norm),
        "conv": dataclasses.asdict(spec.conv),
        "activation": spec.activation, "anti_alias": spec.anti_alias,
        "zero_init_residual": spec.zero_init_residual, "drop_path_rate": spec.drop_path_rate,
        "output_stride": spec.output_stride, "features": list(spec.features) if spec.features else None,
    }


def _walk(a: object, b: object, path: tuple[str | int, ...], out: list[FieldChange]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in dict.fromkeys([*a, *b]):
            _walk(a.get(k, ABSENT), b.get(k, ABSENT), path + (k,), out)
    elif isinstance(a, list) and isinstance(b, list) and all(isinstance(x, dict) for x in a + b):
        for i in range(max(len(a), len(b))):
            _walk(a[i] if i < len(a) else ABSENT, b[i] if i < len(b) else ABSENT, path + (i,), out)
    elif a != b:
        out.append(FieldChange(format_path(path), a, b))


LABELS = ("name", "description")  # what a spec is called, not what it builds: compared only when asked


def field_changes(a: ResNetSpec, b: ResNetSpec, labels: bool = False) -> list[FieldChange]:
    """Every field whose effective value differs, in the spec's order; `name` and `description` only if `labels`."""
    out: list[FieldChange] = []
    ea, eb = effective(a), effective(b)
    if not labels:
        for k in LABELS:
            ea.pop(k), eb.pop(k)
    _walk(ea, eb, (), out)
    return out


def stage_costs(a: ResNetSpec, b: ResNetSpec) -> list[StageCost]:
    """Parameters and MACs of each stem, stage and head row in both specs, each at its own input size."""
    from ..model.analysis import analyse
    rows_a = {r.name: r for r in analyse(a)}
    rows_b = {r.name: r for r in analyse(b)}
    names = list(dict.fromkeys([*rows_a, *rows_b]))
    names.sort(key=lambda n: (n != "stem", n == "head"))  # stem first, head last, stages in order between
    out = []
    for n in names:
        ra, rb = rows_a.get(n), rows_b.get(n)
        out.append(StageCost(n, ra.params if ra else None, rb.params if rb else None,
                             ra.macs if ra else None, rb.macs if rb else None))
    return out
