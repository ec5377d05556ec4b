"""The typed, frozen form of a validated spec. The builder only ever sees these."""
from __future__ import annotations

from dataclasses import dataclass, replace

from .schema import defaults
from .stem import StemConvs, stem_convs


@dataclass(frozen=True)
class AttentionSpec:
    """Channel attention after a block's last norm."""

    type: str = "none"
    ratio: float = 0.0625
    divisor: int = 8
    gamma: float = 2.0
    beta: float = 1.0


@dataclass(frozen=True)
class BlockSpec:
    """One residual block's fields, after defaults, stage and per-block overrides are applied."""

    type: str
    expansion: int
    groups: int
    width_per_group: int
    stride_on: str
    shortcut: str
    shortcut_kernel_size: int
    attention: AttentionSpec
    bias: bool
    act_before_add: bool


@dataclass(frozen=True)
class StageSpec:
    """One stage: `blocks` blocks of `channels` planes; `block_at(i)` gives block i's fields."""

    channels: int
    blocks: int
    stride: int
    dilation: int
    block: BlockSpec
    overrides: tuple[tuple[int, BlockSpec], ...] = ()

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
    type: str
    width: int
    pool: str
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
    type: str
    eps: float
    momentum: float
    groups: int


@dataclass(frozen=True)
class HeadSpec:
    num_classes: int
    dropout: float


@dataclass(frozen=True)
class ResNetSpec:
    """A whole network. `data` is the resolved spec (extends merged) as plain data."""

    name: str
    description: str
    in_channels: int
    input_size: int
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec | None
    norm: NormSpec
    activation: str
    anti_alias: str
    zero_init_residual: bool
    drop_path_rate: float
    output_stride: int | None
    features: tuple[int, ...] | None
    data: dict

    @property
    def num_blocks(self) -> int:
        return sum(s.blocks for s in self.stages)


def merge_block(base: dict, over: dict) -> dict:
    """Block fields `over` laid on `base`; the nested attention mapping merges key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = {**out.get(k, {}), **v} if k == "attention" else v
    return out


def resolve_block(fields: dict) -> BlockSpec:
    """The typed block from complete block fields: attention defaults filled, expansion resolved."""
    f = dict(fields)
    f["attention"] = AttentionSpec(**{**defaults("attention"), **f.get("attention", {})})
    if f["expansion"] is None:
        f["expansion"] = 4 if f["type"] == "bottleneck" else 1
    return BlockSpec(**f)


def from_data(data: dict, name: str) -> ResNetSpec:
    """Build the typed spec from schema-valid data, filling every default from the schema."""
    top = {**defaults(""), **data}
    block_defaults = merge_block(defaults("block"), data.get("block") or {})
    stages = []
    for s in data["stages"]:
        s = {**defaults("stage"), **s}
        stage_block = merge_block(block_defaults, s.get("block") or {})
        overrides = tuple(sorted(((o["index"], resolve_block(merge_block(stage_block, o["block"])))
                                  for o in s.get("overrides") or ()), key=lambda ib: ib[0]))
        stages.append(StageSpec(s["channels"], s["blocks"], s["stride"], s["dilation"],
                                resolve_block(stage_block), overrides))
    stem = {**defaults("stem"), **(data.get("stem") or {})}
    if stem["pool"] is None:
        stem["pool"] = "none" if stem["type"] == "cifar" else "max"
    head = top["head"]
    inp = {**defaults("input"), **(data.get("input") or {})}
    return ResNetSpec(
        name=data.get("name") or name,
        description=data.get("description", ""),
        in_channels=inp["channels"],
        input_size=inp["size"],
        stem=StemSpec(**stem),
        stages=tuple(stages),
        head=None if head is None else HeadSpec(**{**defaults("head"), **head}),
        norm=NormSpec(**{**defaults("norm"), **(data.get("norm") or {})}),
        activation=top["activation"],
        anti_alias=top["anti_alias"],
        zero_init_residual=top["zero_init_residual"],
        drop_path_rate=float(top["drop_path_rate"]),
        output_stride=top["output_stride"],
        features=tuple(top["features"]) if top["features"] is not None else None,
        data=data,
    )


def with_num_classes(spec: ResNetSpec, num_classes: int) -> ResNetSpec:
    """The same spec with its classifier resized (a head is added if it had none)."""
    head = HeadSpec(num_classes, spec.head.dropout if spec.head else 0.0)
    data = {**spec.data, "head": {**(spec.data.get("head") or {}), "num_classes": num_classes}}
    return replace(spec, head=head, data=data)
