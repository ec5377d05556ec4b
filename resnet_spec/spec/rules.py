"""Semantic rules: what the schema cannot say about a spec."""
from __future__ import annotations

from ..errors import ErrorRecord
from .layout import plan, stem_reduction, stem_sizes
from .resolve import Resolved
from .types import ResNetSpec


def _origin(res: Resolved, si: int, bi: int | None, field: str) -> tuple:
    """Path where a block field of stage si (block bi) was set, for pointing errors at it."""
    stage = res.data["stages"][si]
    if bi is not None:
        for oi, o in enumerate(stage.get("overrides") or ()):
            if o.get("index") == bi and field in o.get("block", {}):
                return ("stages", si, "overrides", oi, "block", field)
    if field in (stage.get("block") or {}):
        return ("stages", si, "block", field)
    if field in (res.data.get("block") or {}):
        return ("block", field)
    return ("stages", si)


def check(spec: ResNetSpec, res: Resolved) -> list[ErrorRecord]:
    """Every semantic problem in a schema-valid spec."""
    errors: list[ErrorRecord] = []
    seen: set[tuple] = set()

    def err(path: tuple, msg: str) -> None:
        if (path, msg) not in seen:
            seen.add((path, msg))
            errors.append(res.error(path, msg))

    n_stages = len(spec.stages)
    for si, st in enumerate(spec.stages):
        first: dict[int, int] = {}
        for oi, o in enumerate(res.data["stages"][si].get("overrides") or ()):
            index = o["index"]
            if index >= st.blocks:
                err(("stages", si, "overrides", oi, "index"),
                    f"block {index} does not exist; the stage has {st.blocks} block{'s' if st.blocks > 1 else ''}")
            if index in first:
                err(("stages", si, "overrides", oi, "index"),
                    f"block {index} is already overridden by overrides[{first[index]}]; merge the two")
            first.setdefault(index, oi)
        for bi in range(st.blocks):
            b = st.block_at(bi)
            at = None if b is st.block else bi
            if b.type == "basic":
                if b.groups != 1:
                    err(_origin(res, si, at, "groups"), f"basic blocks support only groups: 1, got {b.groups}")
                if b.width_per_group != 64:
                    err(_origin(res, si, at, "width_per_group"),
                        f"basic blocks support only width_per_group: 64, got {b.width_per_group}")
                if b.stride_on != "3x3":
                    err(_origin(res, si, at, "stride_on"), "stride_on: 1x1 applies to bottleneck blocks only")
            elif int(st.channels * b.width_per_group / 64) < 1:
                err(_origin(res, si, at, "width_per_group"),
                    f"inner width int({st.channels} * {b.width_per_group} / 64) is 0; "
                    "raise width_per_group or channels")
        if spec.output_stride is not None and st.dilation != 1:
            err(("stages", si, "dilation"), "set either output_stride or per-stage dilation, not both")
    if spec.stem.type == "deep_tiered" and spec.stem.width < 4:
        err(("stem", "width"), f"a deep_tiered stem needs a width of at least 4 (its first conv has "
            f"3 * (width // 4) channels), got {spec.stem.width}")
    if spec.features is not None:
        for i, f in enumerate(spec.features):
            if f > n_stages:
                err(("features", i), f"feature index {f} does not exist; 0 is the stem and 1..{n_stages} the stages")
    if spec.output_stride is not None and spec.output_stride < stem_reduction(spec):
        err(("output_stride",), f"the stem alone already reduces by {stem_reduction(spec)}")

    stages = plan(spec)
    norm_groups = spec.norm.groups if spec.norm.type == "groupnorm" else 1
    for sp in stages:
        si = sp.index - 1
        for bp in sp.blocks:
            b = bp.block
            at = None if b is spec.stages[si].block else bp.index
            if b.shortcut == "option_a" and bp.shortcut and bp.outplanes < bp.inplanes:
                err(_origin(res, si, at, "shortcut"),
                    f"option_a can only add channels, but block {bp.index} goes from "
                    f"{bp.inplanes} to {bp.outplanes}")
            for ch in {bp.width, bp.outplanes}:
                if ch % norm_groups:
                    err(("norm", "groups"), f"{norm_groups} groups do not divide the {ch} channels of "
                        f"stages[{si}]")
    if spec.stem.norm or spec.stem.pool == "conv" or spec.stem.type in ("deep", "deep_tiered"):
        for ch in spec.stem.convs.widths:
            if ch % norm_groups:
                err(("norm", "groups"), f"{norm_groups} groups do not divide the stem's {ch} channels")

    if spec.anti_alias == "avg":
        # The 2x2 average pool rounds down and every shortcut rounds up, so the sum fails on an odd map.
        size = stem_sizes(spec, spec.input_size)[-1][1]
        for sp in stages:
            stride = sp.blocks[0].stride
            if stride > 1 and size % stride and size >= stride:  # smaller maps vanish: reported below
                err(("input", "size"), f"with anti_alias: avg, stages[{sp.index - 1}] gets a {size}px map that "
                    f"its stride {stride} does not divide; the pooled path and the shortcut would differ in size")
                break
            size = sp.size
    sizes = stem_sizes(spec, spec.input_size) + [(f"stages[{sp.index - 1}]", sp.size) for sp in stages]
    for where, size in sizes:
        if size < 1:
            err(("input", "size"), f"a {spec.input_size}px input shrinks to nothing at {where}")
            break
    return errors
