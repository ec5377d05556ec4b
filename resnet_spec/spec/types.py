"""The typed, frozen form of a validated spec. The builder only ever sees these."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

from .schema import defaults
from .stem import StemConvs, stem_convs
from .yamlio import JsonPath

# The names the spec language allows, as schemas/resnet-spec.schema.json enumerates them
# (tests/test_spec_layer.py checks that the two agree).
BlockType: TypeAlias = Literal["basic", "bottleneck"]
StrideOn: TypeAlias = Literal["3x3", "1x1"]
Shortcut: TypeAlias = Literal["conv", "avg_conv", "option_a"]
ShortcutKernelSize: TypeAlias = Literal[1, 3]
AttentionType: TypeAlias = Literal["none", "se", "eca"]
StemType: TypeAlias = Literal["conv7x7", "deep", "deep_tiered", "cifar"]
# The schema's null is resolved to "max" or "none" by stem type.
StemPool: TypeAlias = Literal["max", "max_fixed", "conv", "none"]
NormType: TypeAlias = Literal["batchnorm", "groupnorm", "frn", "evonorm_s0"]
ConvType: TypeAlias = Literal["plain", "std"]
Activation: TypeAlias = Literal["relu", "silu", "gelu", "leaky_relu", "none"]
AntiAlias: TypeAlias = Literal["none", "blur", "avg"]
OutputStride: TypeAlias = Literal[8, 16, 32]
Interpolation: TypeAlias = Literal["bilinear", "bicubic", "nearest"]


@dataclass(frozen=True)
class BlockKind:
    """What the spec layer must know of a block type: its default expansion and whether it has an inner width."""

    expansion: int       # output channels = planes * expansion when the spec leaves expansion null
    inner_width: bool    # True: a grouped middle conv of layout.inner_width channels; False: planes throughout
    convs: int           # convs in the branch: `widths` lists the output widths of all but the last


# One entry per block type (the model's BLOCKS table holds the modules; tests/test_tables.py checks the keys agree).
BLOCK_KINDS: dict[str, BlockKind] = {
    "basic": BlockKind(expansion=1, inner_width=False, convs=2),
    "bottleneck": BlockKind(expansion=4, inner_width=True, convs=3),
}


@dataclass(frozen=True)
class AttentionSpec:
    """Channel attention after a block's last norm; the schema's `attention` defaults fill what a spec omits."""

    type: AttentionType
    ratio: float
    divisor: int
    gamma: float
    beta: float
    kernel_size: int | None  # ECA: explicit, else from gamma and beta


@dataclass(frozen=True)
class BlockSpec:
    """One residual block's fields, after defaults, stage and per-block overrides are applied."""

    type: BlockType
    expansion: int
    groups: int
    width_per_group: int
    widths: tuple[int, ...] | None  # explicit output widths of the branch's convs but the last (pruned networks)
    reduce_first: int
    stride_on: StrideOn
    shortcut: Shortcut
    shortcut_kernel_size: ShortcutKernelSize
    attention: AttentionSpec
    bias: bool
    act_before_add: bool


@dataclass(frozen=True)
class Origins:
    """Where a stage's overrides and block fields were written, as JSON paths into the resolved spec."""

    overrides: tuple[int, ...] = ()  # the `index` of each override, in the order written: overrides[oi]
    block: Mapping[str, JsonPath] = field(default_factory=dict)  # field -> the stage's or top-level block setting it
    overridden: Mapping[int, Mapping[str, JsonPath]] = field(default_factory=dict)  # block index -> field -> override

    def where(self, index: int, name: str) -> JsonPath | None:
        """Where block `index` got field `name`: its first override setting it, the stage's block, the top level."""
        return self.overridden.get(index, {}).get(name) or self.block.get(name)


@dataclass(frozen=True)
class StageSpec:
    """One stage: `blocks` blocks of `channels` planes; `block_at(i)` gives block i's fields."""

    channels: int
    blocks: int
    stride: int
    dilation: int
    block: BlockSpec
    overrides: tuple[tuple[int, BlockSpec], ...] = ()  # (block index, its fields), by index
    # Where the user wrote each part, for pointing errors at it; not part of the network, so never compared.
    origins: Origins = field(default_factory=Origins, compare=False, hash=False, repr=False)

    def block_at(self, index: int) -> BlockSpec:
        for i, b in self.overrides:
            if i == index:
                return b
        return self.block

    @property
    def out_channels(self) -> int:
        return self.channels * self.block_at(self.blocks - 1).expansion


@dataclass(frozen=True)
class StemSpec:
    """The stem: its convs (from type and width), whether they have norm and bias, and the pool after them."""

    type: StemType
    width: int
    pool: StemPool
    norm: bool
    bias: bool

    @property
    def convs(self) -> StemConvs:
        return stem_convs(self.type, self.width)

    @property
    def out_channels(self) -> int:
        return self.convs.out_channels


@dataclass(frozen=True)
class NormSpec:
    """The norm layer every conv is followed by; `groups` applies to groupnorm only."""

    type: NormType
    eps: float
    momentum: float
    groups: int


@dataclass(frozen=True)
class ConvSpec:
    """The conv layers' kind: plain nn.Conv2d, or weight-standardised with `eps` (timm's StdConv2d)."""

    type: ConvType
    eps: float


@dataclass(frozen=True)
class HeadSpec:
    """The classifier: global average pool, dropout, and a linear layer to `num_classes`."""

    num_classes: int
    dropout: float


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EvalTransform:
    """How images are prepared for evaluation: resize to size / crop_pct, center-crop (timm's pretrained_cfg)."""

    crop_pct: float = 0.875
    interpolation: Interpolation = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


@dataclass(frozen=True)
class ResNetSpec:
    """A whole network. `data` is the resolved spec (extends merged) as plain data, outside eq and hash."""

    name: str
    description: str
    in_channels: int
    input_size: int
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec | None
    norm: NormSpec
    activation: Activation
    anti_alias: AntiAlias
    zero_init_residual: bool
    drop_path_rate: float
    output_stride: OutputStride | None
    features: tuple[int, ...] | None
    preact: bool
    conv: ConvSpec
    # Plain data for checkpoints and exports; two specs that build the same network are equal whatever it holds.
    data: dict[str, Any] = field(compare=False, hash=False)
    # Metadata of the eval transform: it does not change the network, so it is outside eq and hash too.
    eval_transform: EvalTransform = field(default=EvalTransform(), compare=False, hash=False)

    @property
    def num_blocks(self) -> int:
        return sum(s.blocks for s in self.stages)


def merge_block(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Block fields `over` laid on `base`; the nested attention mapping merges key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = {**out.get(k, {}), **v} if k == "attention" else v
    return out


def resolve_block(fields: Mapping[str, Any]) -> BlockSpec:
    """The typed block from complete block fields: attention defaults filled, expansion resolved."""
    f = dict(fields)
    f["attention"] = AttentionSpec(**{**defaults("attention"), **f.get("attention", {})})
    if f["widths"] is not None:
        f["widths"] = tuple(f["widths"])
    if f["expansion"] is None:
        f["expansion"] = BLOCK_KINDS[f["type"]].expansion
    return BlockSpec(**f)


def _origins(si: int, top_block: Mapping[str, Any], stage: Mapping[str, Any]) -> Origins:
    """Where stage si's overrides and block fields were written in the spec data."""
    block: dict[str, JsonPath] = {k: ("block", k) for k in top_block}
    block.update({k: ("stages", si, "block", k) for k in stage.get("block") or {}})
    overrides = stage.get("overrides") or ()
    overridden: dict[int, dict[str, JsonPath]] = {}
    for oi, o in enumerate(overrides):
        fields = overridden.setdefault(o["index"], {})
        for k in o["block"]:
            fields.setdefault(k, ("stages", si, "overrides", oi, "block", k))
    return Origins(tuple(o["index"] for o in overrides), block, overridden)


def _stage(si: int, stage: Mapping[str, Any], top_block: Mapping[str, Any]) -> StageSpec:
    """Stage si of the spec data, typed, with every default filled; `top_block` is the spec's own `block`."""
    s = {**defaults("stage"), **stage}
    stage_block = merge_block(merge_block(defaults("block"), top_block), s.get("block") or {})
    overrides = tuple(sorted(((o["index"], resolve_block(merge_block(stage_block, o["block"])))
                              for o in s.get("overrides") or ()), key=lambda ib: ib[0]))
    return StageSpec(s["channels"], s["blocks"], s["stride"], s["dilation"], resolve_block(stage_block), overrides,
                     _origins(si, top_block, s))


def from_data(data: dict[str, Any], name: str) -> ResNetSpec:
    """Build the typed spec from schema-valid data, filling every default from the schema."""
    top = {**defaults(""), **data}
    top_block = data.get("block") or {}
    stem = {**defaults("stem"), **(data.get("stem") or {})}
    if stem["pool"] is None:
        stem["pool"] = "none" if stem["type"] == "cifar" else "max"
    if stem["norm"] is None:
        stem["norm"] = not top["preact"]
    head = top["head"]
    inp = {**defaults("input"), **(data.get("input") or {})}
    return ResNetSpec(
        name=data.get("name") or name,
        description=data.get("description", ""),
        in_channels=inp["channels"],
        input_size=inp["size"],
        stem=StemSpec(**stem),
        stages=tuple(_stage(si, s, top_block) for si, s in enumerate(data["stages"])),
        head=None if head is None else HeadSpec(**{**defaults("head"), **head}),
        norm=NormSpec(**{**defaults("norm"), **(data.get("norm") or {})}),
        activation=top["activation"],
        anti_alias=top["anti_alias"],
        zero_init_residual=top["zero_init_residual"],
        drop_path_rate=float(top["drop_path_rate"]),
        output_stride=top["output_stride"],
        features=tuple(top["features"]) if top["features"] is not None else None,
        preact=top["preact"],
        conv=ConvSpec(**{**defaults("conv"), **(data.get("conv") or {})}),
        data=data,
        eval_transform=EvalTransform(float(inp["crop_pct"]), inp["interpolation"],
                                     IMAGENET_MEAN if inp["mean"] is None else tuple(map(float, inp["mean"])),
                                     IMAGENET_STD if inp["std"] is None else tuple(map(float, inp["std"]))),
    )


def with_num_classes(spec: ResNetSpec, num_classes: int) -> ResNetSpec:
    """The same spec with its classifier resized (a head is added if it had none); `data` is copied, not changed."""
    head = HeadSpec(num_classes, spec.head.dropout if spec.head else 0.0)
    data = {**spec.data, "head": {**(spec.data.get("head") or {}), "num_classes": num_classes}}
    return replace(spec, head=head, data=data)
