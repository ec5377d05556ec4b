"""Semantic rules: what the schema cannot say about a spec, one small function per rule.

A rule yields (path, message) problems. `check` runs RULES in order, as jsonschema runs one
function per keyword; `_each_stage` and `_each_block` run stage and block rules stage by stage,
block by block. The order of RULES is the order problems are reported in, which callers that do
not sort (the importer shows the first) rely on.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from ..errors import ErrorRecord
from .layout import BlockPlan, StagePlan, inner_width, plan, stem_reduction, stem_sizes
from .resolve import Resolved
from .types import BLOCK_KINDS, BlockSpec, ResNetSpec, StageSpec
from .yamlio import JsonPath

Problem = tuple[JsonPath, str]


@dataclass(frozen=True)
class Net:
    """What every rule looks at: the typed spec and its layout plan."""

    spec: ResNetSpec
    stages: list[StagePlan]

    @property
    def norm_groups(self) -> int:
        """Groups of every norm layer: 1 unless it is a group norm or EvoNorm-S0."""
        return self.spec.norm.groups if self.spec.norm.type in ("groupnorm", "evonorm_s0") else 1


@dataclass(frozen=True)
class Block:
    """One block as the block rules see it: its stage, its fields and its planned geometry."""

    si: int  # index into spec.stages, as in $.stages[si]
    stage: StageSpec
    plan: BlockPlan

    @property
    def fields(self) -> BlockSpec:
        return self.plan.block

    def where(self, name: str) -> JsonPath:
        """Where this block's field `name` was written, else its stage: the path an error points at."""
        return self.stage.origins.where(self.plan.index, name) or ("stages", self.si)


Rule = Callable[[Net], Iterator[Problem]]
StageRule = Callable[[Net, int], Iterator[Problem]]
BlockRule = Callable[[Net, Block], Iterator[Problem]]


def _each_stage(*rules: StageRule) -> Rule:
    """A rule that runs `rules` on stage 0, then on stage 1, and so on."""
    def run(net: Net) -> Iterator[Problem]:
        for si in range(len(net.spec.stages)):
            for rule in rules:
                yield from rule(net, si)
    return run


def _each_block(*rules: BlockRule) -> StageRule:
    """A stage rule that runs `rules` on the stage's block 0, then on block 1, and so on."""
    def run(net: Net, si: int) -> Iterator[Problem]:
        for bp in net.stages[si].blocks:
            block = Block(si, net.spec.stages[si], bp)
            for rule in rules:
                yield from rule(net, block)
    return run


def _override_indexes(net: Net, si: int) -> Iterator[Problem]:
    """Each override names a block that exists, and no other override names it too."""
    stage = net.spec.stages[si]
    first: dict[int, int] = {}
    for oi, index in enumerate(stage.origins.overrides):
        at = ("stages", si, "overrides", oi, "index")
        if index >= stage.blocks:
            plural = "s" if stage.blocks > 1 else ""
            yield at, f"block {index} does not exist; the stage has {stage.blocks} block{plural}"
        if index in first:
            yield at, f"block {index} is already overridden by overrides[{first[index]}]; merge the two"
        first.setdefault(index, oi)


def _dilation_or_output_stride(net: Net, si: int) -> Iterator[Problem]:
    """A stage sets its dilation only when output_stride is unset, since output_stride sets every stage's."""
    if net.spec.output_stride is not None and net.spec.stages[si].dilation != 1:
        yield ("stages", si, "dilation"), "set either output_stride or per-stage dilation, not both"


def _basic_groups(net: Net, b: Block) -> Iterator[Problem]:
    """A basic block has no grouped conv, as torchvision's BasicBlock."""
    if b.fields.type == "basic" and b.fields.groups != 1:
        yield b.where("groups"), f"basic blocks support only groups: 1, got {b.fields.groups}"


def _basic_width_per_group(net: Net, b: Block) -> Iterator[Problem]:
    """A basic block has no inner width to scale, as torchvision's BasicBlock."""
    if b.fields.type == "basic" and b.fields.width_per_group != 64:
        yield b.where("width_per_group"), ("basic blocks support only width_per_group: 64, "
                                           f"got {b.fields.width_per_group}")


def _basic_stride_on(net: Net, b: Block) -> Iterator[Problem]:
    """A basic block has no 1x1 conv to put the stride on."""
    if b.fields.type == "basic" and b.fields.stride_on != "3x3":
        yield b.where("stride_on"), "stride_on: 1x1 applies to bottleneck blocks only"


def _bottleneck_inner_width(net: Net, b: Block) -> Iterator[Problem]:
    """A bottleneck's inner width keeps at least one channel."""
    if b.fields.type == "bottleneck" and inner_width(b.stage.channels, b.fields) < 1:
        yield b.where("width_per_group"), (f"inner width int({b.stage.channels} * {b.fields.width_per_group} / 64) "
                                           "is 0; raise width_per_group or channels")


def _widths_count(net: Net, b: Block) -> Iterator[Problem]:
    """Explicit widths name every conv of the branch but the last, which has the block's output width."""
    widths, n = b.fields.widths, BLOCK_KINDS[b.fields.type].convs - 1
    if widths is not None and len(widths) != n:
        names = "[conv1]" if n == 1 else "[conv1, conv2]"
        plural = "s" if n > 1 else ""
        yield b.where("widths"), f"a {b.fields.type} block takes {n} width{plural} {names}, got {len(widths)}"


def _first_width(net: Net, b: Block) -> Iterator[Problem]:
    """reduce_first leaves the first conv at least one channel."""
    if b.fields.widths is None and b.plan.width >= 1 and b.plan.first_width < 1:
        yield b.where("reduce_first"), (f"reduce_first {b.fields.reduce_first} leaves the first conv of "
                                        f"{b.plan.width} channels with none")


def _groups_divide_widths(net: Net, b: Block) -> Iterator[Problem]:
    """A bottleneck's grouped 3x3 conv: its groups divide its input and output widths."""
    p, g = b.plan, b.fields.groups
    if b.fields.type == "bottleneck" and g > 1 and (p.first_width % g or p.width % g) and p.first_width >= 1:
        field = "widths" if b.fields.widths is not None else "reduce_first"
        yield b.where(field), (f"groups {g} do not divide the 3x3 conv's widths {p.first_width} -> {p.width}")


def _eca_kernel_odd(net: Net, b: Block) -> Iterator[Problem]:
    """An explicit ECA kernel is odd, so its padding keeps every channel."""
    k = b.fields.attention.kernel_size
    if k is not None and k % 2 == 0:
        yield b.where("attention"), f"attention kernel_size must be odd, got {k}"


# What a pre-activation network (timm's ResNetV2) has no place for: block field -> (its value there, why).
_PREACT_BLOCK: dict[str, tuple[object, str]] = {
    "shortcut": ("option_a", "a pre-activation block projects with a conv: conv or avg_conv"),
    "shortcut_kernel_size": (3, "a pre-activation block projects with a 1x1 conv"),
    "bias": (True, "pre-activation blocks have no conv bias"),
    "act_before_add": (True, "a pre-activation block applies nothing between its last conv and the addition"),
}


def _preact_block(net: Net, b: Block) -> Iterator[Problem]:
    """The block fields a pre-activation block cannot honour."""
    if not net.spec.preact:
        return
    for name, (value, why) in _PREACT_BLOCK.items():
        if getattr(b.fields, name) == value:
            yield b.where(name), f"{name}: {value!r} does not apply with preact: true; {why}"
    if b.fields.attention.type != "none":
        yield b.where("attention"), "attention does not apply with preact: true; timm's ResNetV2 has none"


def _preact_only(net: Net) -> Iterator[Problem]:
    """Weight standardisation and the norms with their own nonlinearity belong to pre-activation networks;
    these networks have no norm after the stem, no conv stem pool and no anti-aliasing."""
    spec = net.spec
    if not spec.preact:
        if spec.conv.type == "std":
            yield ("conv", "type"), "conv type std needs preact: true (as timm's ResNetV2 and BiT)"
        if spec.norm.type in ("frn", "evonorm_s0"):
            yield ("norm", "type"), f"norm type {spec.norm.type} needs preact: true (as timm's ResNetV2)"
        if spec.stem.pool == "max_fixed":
            yield ("stem", "pool"), "stem pool max_fixed needs preact: true (BiT's stem)"
        return
    if spec.norm.type in ("frn", "evonorm_s0") and spec.activation != "relu":
        yield ("activation",), (f"norm type {spec.norm.type} carries its own nonlinearity; the activation must "
                                f"stay relu, got {spec.activation}")
    if spec.stem.norm:
        yield ("stem", "norm"), "a pre-activation stem has no norm after its conv: the first block's norm is it"
    if spec.stem.pool == "conv":
        yield ("stem", "pool"), "stem pool conv does not apply with preact: true; use max, max_fixed or none"
    if spec.stem.bias:
        yield ("stem", "bias"), "a pre-activation stem's convs have no bias"
    if spec.anti_alias != "none":
        yield ("anti_alias",), "anti_alias does not apply with preact: true; timm's ResNetV2 has none"


def _option_a_adds_channels(net: Net, b: Block) -> Iterator[Problem]:
    """An option_a shortcut pads with zero channels, so it can only widen."""
    p = b.plan
    if p.block.shortcut == "option_a" and p.shortcut and p.outplanes < p.inplanes:
        yield b.where("shortcut"), (f"option_a can only add channels, but block {p.index} goes from "
                                    f"{p.inplanes} to {p.outplanes}")


def _stem_convs_have_channels(net: Net) -> Iterator[Problem]:
    """No stem conv is left without channels; only deep_tiered can be, its first conv having 3 * (width // 4)."""
    stem = net.spec.stem
    if min(stem.convs.widths) < 1:
        yield ("stem", "width"), (f"a deep_tiered stem needs a width of at least 4 (its first conv has "
                                  f"3 * (width // 4) channels), got {stem.width}")


def _transform_channels(net: Net) -> Iterator[Problem]:
    """An explicit input mean or std gives one value per input channel."""
    spec, inp = net.spec, net.spec.data.get("input") or {}
    for name in ("mean", "std"):
        values = inp.get(name)
        if values is not None and len(values) != spec.in_channels:
            yield ("input", name), (f"{len(values)} value{'s' if len(values) > 1 else ''} for "
                                    f"{spec.in_channels} input channel{'s' if spec.in_channels > 1 else ''}")


def _feature_indexes(net: Net) -> Iterator[Problem]:
    """Each feature index names the stem (0) or a stage."""
    n = len(net.spec.stages)
    for i, f in enumerate(net.spec.features or ()):
        if f > n:
            yield ("features", i), f"feature index {f} does not exist; 0 is the stem and 1..{n} the stages"


def _output_stride_after_stem(net: Net) -> Iterator[Problem]:
    """output_stride is at least the stem's own reduction, which no dilation can undo."""
    spec = net.spec
    if spec.output_stride is not None and spec.output_stride < stem_reduction(spec):
        yield ("output_stride",), f"the stem alone already reduces by {stem_reduction(spec)}"


def _norm_groups_divide(net: Net) -> Iterator[Problem]:
    """Group norm's groups divide every width normalised, in the stem and every block: one problem names them all."""
    groups = net.norm_groups
    if groups == 1:
        return
    bad: dict[str, list[int]] = {}
    stem = net.spec.stem
    # A deep stem (more than one conv) has norms between its convs whatever stem.norm says; a conv pool has one too.
    if stem.norm or stem.pool == "conv" or len(stem.convs.widths) > 1:
        for ch in stem.convs.widths:
            if ch % groups and ch not in bad.setdefault("the stem", []):
                bad["the stem"].append(ch)
    for sp in net.stages:
        where = f"stages[{sp.index - 1}]"
        for bp in sp.blocks:
            for ch in (bp.first_width, bp.width, bp.outplanes):
                if ch % groups and ch not in bad.setdefault(where, []):
                    bad[where].append(ch)
    parts = [f"{where} ({', '.join(str(c) for c in sorted(chs))})" for where, chs in bad.items() if chs]
    if parts:
        yield ("norm", "groups"), f"{groups} groups do not divide the channels of {', '.join(parts)}"


def _avg_anti_alias_maps_divide(net: Net) -> Iterator[Problem]:
    """With anti_alias: avg, each strided stage gets a map its stride divides; the first that does not is named."""
    spec = net.spec
    if spec.anti_alias != "avg":
        return
    # The 2x2 average pool rounds down and every shortcut rounds up, so the sum fails on an odd map.
    size = stem_sizes(spec, spec.input_size)[-1][1]
    for sp in net.stages:
        stride = sp.blocks[0].stride
        if stride > 1 and size % stride and size >= stride:  # smaller maps vanish: _maps_survive reports them
            yield ("input", "size"), (f"with anti_alias: avg, stages[{sp.index - 1}] gets a {size}px map that its "
                                      f"stride {stride} does not divide; the pooled path and the shortcut would "
                                      "differ in size")
            return
        size = sp.size


def _maps_survive(net: Net) -> Iterator[Problem]:
    """The input keeps at least one pixel through the stem and every stage; the first place it does not is named."""
    spec = net.spec
    sizes = stem_sizes(spec, spec.input_size) + [(f"stages[{sp.index - 1}]", sp.size) for sp in net.stages]
    for where, size in sizes:
        if size < 1:
            yield ("input", "size"), f"a {spec.input_size}px input shrinks to nothing at {where}"
            return


RULES: tuple[Rule, ...] = (
    _each_stage(_override_indexes,
                _each_block(_basic_groups, _basic_width_per_group, _basic_stride_on, _bottleneck_inner_width,
                            _widths_count, _first_width, _groups_divide_widths, _eca_kernel_odd, _preact_block),
                _dilation_or_output_stride),
    _stem_convs_have_channels,
    _preact_only,
    _transform_channels,
    _feature_indexes,
    _output_stride_after_stem,
    _each_stage(_each_block(_option_a_adds_channels)),
    _norm_groups_divide,
    _avg_anti_alias_maps_divide,
    _maps_survive,
)


def check(spec: ResNetSpec, res: Resolved) -> list[ErrorRecord]:
    """Every semantic problem in a schema-valid spec, each once, positioned through `res`."""
    net = Net(spec, plan(spec))
    seen: set[Problem] = set()
    errors: list[ErrorRecord] = []
    for rule in RULES:
        for path, msg in rule(net):
            if (path, msg) not in seen:
                seen.add((path, msg))
                errors.append(res.error(path, msg))
    return errors


def min_params(spec: ResNetSpec) -> int:
    """A lower bound on the parameter count, from the layout plan alone: every conv's weights and the classifier.

    Norms, biases and attention are left out, so it never exceeds what the built module counts; it is
    only for warning, without torch, that a spec is over build's cap. The exact count comes from the
    meta-device module (model/analysis.py).
    """
    convs = spec.stem.convs
    total, cin = 0, spec.in_channels
    for i, w in enumerate(convs.widths):
        k = convs.kernel if i == 0 else 3
        total += cin * w * k * k
        cin = w
    for sp in plan(spec):
        for b in sp.blocks:
            if b.block.type == "bottleneck":
                g = b.block.groups
                total += b.inplanes * b.first_width + b.first_width * b.width // g * 9 + b.width * b.outplanes
            elif b.block.type == "basic":
                total += b.inplanes * b.first_width * 9 + b.first_width * b.outplanes * 9
            if b.shortcut and b.block.shortcut != "option_a":
                total += b.inplanes * b.outplanes
        cin = sp.out_channels
    if spec.head is not None:
        total += cin * spec.head.num_classes + spec.head.num_classes
    return total


def over_caps(spec: ResNetSpec, res: Resolved, max_params: int, max_blocks: int) -> list[ErrorRecord]:
    """Warnings for a valid spec that `build` refuses under the given caps: too many blocks or parameters."""
    out = []
    if spec.num_blocks > max_blocks:
        out.append(res.error(("stages",), f"{spec.num_blocks:,} residual blocks, more than build's default cap of "
                                          f"{max_blocks:,}"))
    elif (n := min_params(spec)) > max_params:
        out.append(res.error((), f"at least {n:,} parameters, more than build's default cap of {max_params:,}"))
    return out


def size_problems(spec: ResNetSpec, size: int) -> list[str]:
    """What goes wrong at an input size other than the spec's own: the odd-map and shrink-to-nothing rules at `size`."""
    at = replace(spec, input_size=size)
    net = Net(at, plan(at))
    return [msg for rule in (_avg_anti_alias_maps_divide, _maps_survive) for _, msg in rule(net)]
