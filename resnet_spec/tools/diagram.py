"""Draw a spec as a plain SVG: input, stem, one box per stage, head, with the tensor shape on each arrow.

Written by hand as XML text, so nothing beyond the standard library (no Graphviz) is needed.
"""
from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from ..model.analysis import Row
from ..spec.layout import plan
from ..spec.types import ResNetSpec

WIDTH, BOX_W, LEFT = 560, 380, 30
GAP = 46          # vertical room for an arrow and its shape label
LINE = 17         # text line height
CHARS = 52        # characters of 13 px text that fit in a box
_STEM_LABELS = {"deep_tiered": "tiered"}  # a stem of several convs is labelled by its type, or by this
FILL = {"input": "#f2f2f2", "stem": "#e3e3e3", "basic": "#dbe9f8", "bottleneck": "#dcefdc", "head": "#fbe5cc"}
STAGE_FILL = "#e6e0f4"  # a block type without a colour of its own: a new type needs no edit here


def _count(n: int, unit: str) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.1f}{suffix} {unit}"
    return f"{n} {unit}"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape[1:])  # without the batch axis


def _stem_lines(spec: ResNetSpec) -> list[str]:
    st, c = spec.stem, spec.stem.convs
    if len(c.widths) == 1:
        convs = f"{c.kernel}x{c.kernel} conv stride {c.stride}"
    else:
        convs = f"{_STEM_LABELS.get(st.type, st.type)}: {c.kernel}x{c.kernel} convs {', '.join(map(str, c.widths))}"
    pool = {"max": "3x3 max pool stride 2", "max_fixed": "zero pad 1, 3x3 max pool stride 2",
            "conv": "3x3 conv stride 2 as pool", "none": "no pool"}[st.pool]
    if spec.preact:  # no norm or activation after the last conv: the first block's norm is the pre-activation
        return [f"stem: {convs}", pool]
    return [f"stem: {convs}", f"{'norm, ' if st.norm else ''}{spec.activation}, {pool}"]


def stage_name(spec: ResNetSpec, index: int) -> str:
    """The module name of stage `index` (from 0): layerN, or stages.N-1 in a pre-activation net (timm's)."""
    return f"stages.{index}" if spec.preact else f"layer{index + 1}"


def _stage_lines(spec: ResNetSpec, index: int) -> tuple[str, list[str]]:
    sp = plan(spec)[index]
    stage = spec.stages[index]
    block = stage.block
    first = sp.blocks[0]
    lines = [f"{stage_name(spec, index)}: {stage.blocks} x {'pre-activation ' if spec.preact else ''}{block.type}",
             f"channels {stage.channels}, out {sp.out_channels}, stride {first.stride}"
             + (f", dilation {sp.dilation}" if sp.dilation > 1 else "")]
    extra = []
    if block.type == "bottleneck" and (block.groups > 1 or block.width_per_group != 64):
        extra.append(f"groups {block.groups}, width_per_group {block.width_per_group}, inner width {first.width}")
    if block.attention.type != "none":
        extra.append(f"{block.attention.type} attention")
    if first.shortcut and block.shortcut != "conv":
        extra.append(f"{block.shortcut} shortcut")
    if stage.overrides:
        extra.append(f"{len(stage.overrides)} block(s) overridden")
    for item in extra:  # packed into lines that fit the box (about 7 px a character at 13 px)
        if len(lines) > 2 and len(lines[-1]) + len(item) + 2 <= CHARS:
            lines[-1] += ", " + item
        else:
            lines.append(item)
    return block.type, lines


def _head_lines(spec: ResNetSpec, in_features: int) -> list[str]:
    if spec.features is not None:
        return ["features: stages " + ", ".join(map(str, spec.features)), "no classifier"]
    if spec.head is None:
        return ["no head: the last feature map is the output"]
    drop = f", dropout {spec.head.dropout:g}" if spec.head.dropout else ""
    if spec.preact:  # the final pre-activation, then timm's ClassifierHead with a 1x1 conv
        return [f"head: norm, {spec.activation}, global average pool{drop}",
                f"1x1 conv {in_features} -> {spec.head.num_classes}"]
    return [f"head: global average pool{drop}", f"linear {in_features} -> {spec.head.num_classes}"]


def _totals(rows: list[Row], input_size: int) -> str:
    params, macs = sum(r.params for r in rows), sum(r.macs for r in rows)
    return f"{_count(params, 'parameters')}, {macs / 1e9:.3f} GMACs at {input_size}x{input_size}"


def render_svg(spec: ResNetSpec, rows: list[Row], input_size: int) -> str:
    """The SVG text of the spec's network; `rows` is analyse(spec, input_size) (one per stem, stage, head),
    which also decides which stages were built."""
    by_name = {r.name: r for r in rows}
    boxes: list[tuple[str, str, list[str], Row | None]] = [
        ("input", "input", [f"input: {spec.in_channels} channels, {input_size}x{input_size}"], None),
        ("stem", "stem", _stem_lines(spec), by_name.get("stem"))]
    for i in range(len(spec.stages)):
        name = stage_name(spec, i)
        if name not in by_name:
            continue  # not built: a stage after the last feature map a features spec returns
        kind, lines = _stage_lines(spec, i)
        boxes.append((name, kind, lines, by_name.get(name)))
    boxes.append(("head", "head", _head_lines(spec, plan(spec)[-1].out_channels), by_name.get("head")))

    parts: list[str] = []
    y = 60
    shape_in = f"{spec.in_channels}x{input_size}x{input_size}"
    for n, (ident, kind, lines, row) in enumerate(boxes):
        if n:  # the arrow into this box carries the previous box's output shape
            parts.append(f'<line x1="{LEFT + BOX_W // 2}" y1="{y - GAP}" x2="{LEFT + BOX_W // 2}" y2="{y - 4}" '
                         'stroke="#333" stroke-width="1.5" marker-end="url(#arrow)"/>')
            parts.append(f'<text class="shape" x="{LEFT + BOX_W // 2 + 10}" y="{y - GAP // 2 + 4}">'
                         f'{escape(shape_in)}</text>')
        cost = [f"{_count(row.params, 'params')}, {row.macs / 1e6:,.1f} MMACs"] if row and row.params else []
        h = LINE * (len(lines) + len(cost)) + 14
        parts.append(f'<g class="box {kind}" id={quoteattr(ident)}>')
        fill = FILL.get(kind, STAGE_FILL)
        parts.append(f'<rect x="{LEFT}" y="{y}" width="{BOX_W}" height="{h}" rx="6" fill="{fill}" stroke="#555"/>')
        for k, text in enumerate(lines + cost):
            cls = ' class="title"' if k == 0 else (' class="cost"' if k >= len(lines) else "")
            parts.append(f'<text{cls} x="{LEFT + 12}" y="{y + 20 + k * LINE}">{escape(text)}</text>')
        parts.append("</g>")
        if row is not None:
            shape_in = _shape(row.shape)
        y += h + GAP
    height = y - GAP + 20
    title = f"{spec.name}: {spec.description}" if spec.description else spec.name
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}">',
        f"<title>{escape(title)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>',
        "<style>text{font-family:Helvetica,Arial,sans-serif;font-size:13px;fill:#111}"
        ".title{font-weight:bold}.shape{font-family:monospace;font-size:12px;fill:#444}"
        ".cost{font-size:11px;fill:#555}</style>",
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text class="title" x="{LEFT}" y="30">{escape(spec.name)}</text>',
        f'<text class="cost" x="{LEFT}" y="46">{escape(_totals(rows, input_size))}</text>',
        *parts,
        "</svg>",
    ]) + "\n"
