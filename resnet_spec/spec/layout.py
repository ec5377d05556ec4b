"""Geometry of a spec: every block's channels, stride and dilation, and every feature map's size.

Pure Python, no torch: the validator uses it to find feature maps that shrink to nothing,
the builder to construct modules, and the analysis to label stages.
"""
from __future__ import annotations

from dataclasses import dataclass

from .types import BLOCK_KINDS, BlockSpec, ResNetSpec


@dataclass(frozen=True)
class BlockPlan:
    """Construction arguments of one residual block."""

    stage: int
    index: int
    inplanes: int
    planes: int
    outplanes: int
    first_width: int    # output channels of the branch's first conv
    width: int          # inner width: a bottleneck's 3x3 conv's channels, a basic block's first conv's
    stride: int
    dilation: int
    first_dilation: int
    shortcut: bool      # whether the block has a projection on its skip path
    drop_path: float
    block: BlockSpec


@dataclass(frozen=True)
class StagePlan:
    """One stage's blocks and what comes out of it: channels, total reduction, map size and dilation."""

    index: int          # 1-based, as in layer1
    blocks: tuple[BlockPlan, ...]
    out_channels: int
    reduction: int
    size: int           # spatial size of the output for spec.input_size
    dilation: int


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil: bool = False) -> int:
    """Output size of a conv or pool along one side, as torch computes it."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    return (-(-span // stride) if ceil else span // stride) + 1


def inner_width(planes: int, block: BlockSpec) -> int:
    """torchvision's bottleneck width: int(planes * width_per_group / 64) * groups."""
    return int(planes * (block.width_per_group / 64.0)) * block.groups


def branch_widths(planes: int, block: BlockSpec) -> tuple[int, int]:
    """A block's first conv's width and its inner width: explicit `widths`, else from planes, groups and
    width_per_group, the first divided by reduce_first (timm's first_planes)."""
    if block.widths is not None:
        return block.widths[0], block.widths[-1]
    width = inner_width(planes, block) if BLOCK_KINDS[block.type].inner_width else planes
    return width // block.reduce_first, width


def stem_sizes(spec: ResNetSpec, size: int) -> list[tuple[str, int]]:
    """Spatial size after each stem op, for an input of `size` pixels."""
    convs = spec.stem.convs
    size = conv_out(size, convs.kernel, convs.stride, convs.padding)
    out = [("stem conv", size)]
    if spec.stem.pool != "none":
        if spec.anti_alias == "avg":
            size = conv_out(size, 2, 2, 0)  # a stride-1 op, then a 2x2 average pool
        else:
            size = conv_out(size, 3, 2, 1)  # max pool, strided conv, or a blur pool (3x3, pad 1)
        out.append(("stem pool", size))
    return out


def stem_conv_reduction(spec: ResNetSpec) -> int:
    """Stride of the stem's convs, before its pool: the reduction of feature 0, as timm's feature_info."""
    return spec.stem.convs.stride


def stem_reduction(spec: ResNetSpec) -> int:
    """Stride of the whole stem, pool included: the input stride of the first stage."""
    return stem_conv_reduction(spec) * (2 if spec.stem.pool != "none" else 1)


def plan(spec: ResNetSpec) -> list[StagePlan]:
    """Per-stage and per-block layout, following torchvision's _make_layer and timm's make_blocks."""
    stages = []
    inplanes = spec.stem.out_channels
    net_stride = stem_reduction(spec)
    dilation = prev_dilation = 1
    size = stem_sizes(spec, spec.input_size)[-1][1]
    total = spec.num_blocks
    k = 0
    for si, st in enumerate(spec.stages):
        stride = st.stride
        if spec.output_stride is None:
            dilation = st.dilation
            net_stride *= stride
        elif net_stride >= spec.output_stride and stride > 1:
            dilation *= stride
            stride = 1
        else:
            net_stride *= stride
        blocks = []
        for bi in range(st.blocks):
            b = st.block_at(bi)
            s = stride if bi == 0 else 1
            outplanes = st.channels * b.expansion
            first_width, width = branch_widths(st.channels, b)
            rate = spec.drop_path_rate * k / (total - 1) if total > 1 else 0.0
            shortcut = s != 1 or inplanes != outplanes
            if spec.preact and bi == 0:
                # timm's ResNetV2: a bottleneck stage's first block always projects; a basic one also when dilated.
                shortcut = shortcut or b.type == "bottleneck" or prev_dilation != dilation
            blocks.append(BlockPlan(si + 1, bi, inplanes, st.channels, outplanes, first_width, width, s, dilation,
                                    prev_dilation, shortcut, rate, b))
            if s > 1:  # every strided path pads like a 3x3 conv, except the 2x2 average pool
                size = size // s if spec.anti_alias == "avg" else conv_out(size, 3, s, 1)
            prev_dilation = dilation
            inplanes = outplanes
            k += 1
        stages.append(StagePlan(si + 1, tuple(blocks), inplanes, net_stride, size, dilation))
    return stages
