"""The stem's modules: its convs (the STEMS table, by stem type) and its pool (STEM_POOLS, by pool kind).

The geometry (each conv's width, kernel and stride) comes from spec.stem.stem_convs, the one place it is written.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from torch import nn

from ..registry import lookup
from ..spec.types import StemSpec
from .layers import LayerContext


def _one_conv(in_channels: int, stem: StemSpec, ctx: LayerContext) -> nn.Module:
    """A single stem conv: torchvision's 7x7 stride 2, or the paper's CIFAR 3x3 stride 1."""
    c = stem.convs
    return nn.Conv2d(in_channels, c.out_channels, c.kernel, stride=c.stride, padding=c.padding, bias=stem.bias)


def _conv_stack(in_channels: int, stem: StemSpec, ctx: LayerContext) -> nn.Module:
    """3x3 convs with a norm and an activation between them (timm's deep and tiered stems)."""
    c = stem.convs
    layers: list[nn.Module] = []
    prev = in_channels
    for i, width in enumerate(c.widths):
        if i:
            layers += [ctx.norm_layer(prev), ctx.act_layer()]
        kernel, stride = (c.kernel, c.stride) if i == 0 else (3, 1)
        layers.append(nn.Conv2d(prev, width, kernel, stride=stride, padding=kernel // 2, bias=stem.bias))
        prev = width
    # A Sequential named conv1 (conv1.0..6), as timm's deep stem, for weight compatibility.
    return nn.Sequential(*layers)


STEMS: dict[str, Callable[[int, StemSpec, LayerContext], nn.Module]] = {
    "conv7x7": _one_conv, "cifar": _one_conv, "deep": _conv_stack, "deep_tiered": _conv_stack}


def _max_pool(channels: int, ctx: LayerContext) -> nn.Module:
    """torchvision's 3x3 stride-2 max pool; anti-aliased as timm does it."""
    if not ctx.anti_aliased:
        return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    if ctx.anti_alias == "avg":  # timm: an average-pool aa layer replaces the max pool outright
        return ctx.aa_layer(channels, 2)
    return nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), ctx.aa_layer(channels, 2))


def _max_fixed_pool(channels: int, ctx: LayerContext) -> nn.Module:
    """BiT's stem pool (timm's stem_type='fixed'): a fixed 1-pixel zero pad, then an unpadded 3x3 stride-2 max pool.
    It differs from `max` where the map is negative: the border sees zeros, not -inf."""
    return nn.Sequential(OrderedDict(pad=nn.ConstantPad2d(1, 0.0), pool=nn.MaxPool2d(3, stride=2, padding=0)))


def _conv_pool(channels: int, ctx: LayerContext) -> nn.Module:
    """timm's replace_stem_pool: a 3x3 stride-2 conv (stride 1, then the aa layer, if anti-aliased), norm, act."""
    aa = ctx.anti_aliased
    layers: list[nn.Module] = [nn.Conv2d(channels, channels, 3, stride=1 if aa else 2, padding=1, bias=False)]
    if aa:
        layers.append(ctx.aa_layer(channels, 2))
    return nn.Sequential(*layers, ctx.norm_layer(channels), ctx.act_layer())


def _no_pool(channels: int, ctx: LayerContext) -> nn.Module:
    return nn.Identity()


STEM_POOLS: dict[str, Callable[[int, LayerContext], nn.Module]] = {
    "max": _max_pool, "max_fixed": _max_fixed_pool, "conv": _conv_pool, "none": _no_pool}


def make_stem_conv(in_channels: int, stem: StemSpec, ctx: LayerContext) -> nn.Module:
    """The stem's conv or convs (the module named conv1)."""
    return lookup(STEMS, "stem type", stem.type)(in_channels, stem, ctx)


def make_stem_pool(stem: StemSpec, ctx: LayerContext) -> nn.Module:
    """The downsampling after the stem's convs (the module named maxpool, whatever it holds)."""
    return lookup(STEM_POOLS, "stem pool", stem.pool)(stem.out_channels, ctx)
