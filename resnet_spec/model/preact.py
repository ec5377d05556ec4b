"""The pre-activation ResNet (He et al. 2016, "Identity Mappings in Deep Residual Networks"; BiT, Kolesnikov et al.
2020) as timm's ResNetV2 builds it: the same module names (stem, stages.N.blocks.M, norm, head.fc), construction
order and init, so timm's state_dicts load strictly and a seeded build draws the same random numbers.

A block runs norm+act, then its convs, each after a norm+act; the projection shortcut reads the pre-activated
input; nothing follows the addition. The network ends in a norm+act before the pool, and the classifier is a 1x1
conv (timm's ClassifierHead with use_conv=True).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from ..registry import lookup
from ..spec.layout import BlockPlan
from ..spec.types import ResNetSpec
from .build import TimmInterface, pretrained_cfg
from .layers import AvgPool2dSame, DropPath, LayerContext
from .stems import make_stem_pool


class DownsampleConv(nn.Module):
    """timm's DownsampleConv under preact: a strided 1x1 conv, no norm (an Identity keeps timm's module names)."""

    def __init__(self, p: BlockPlan, ctx: LayerContext) -> None:
        super().__init__()
        self.conv = ctx.conv_layer(p.inplanes, p.outplanes, 1, stride=p.stride)
        self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.norm(self.conv(x))
        return result


class DownsampleAvg(nn.Module):
    """timm's DownsampleAvg under preact (ResNet-D's avg_down): a 2x2 average pool, then a 1x1 conv, no norm."""

    def __init__(self, p: BlockPlan, ctx: LayerContext) -> None:
        super().__init__()
        if p.stride == 1 and p.dilation == 1:
            self.pool: nn.Module = nn.Identity()
        elif p.stride == 1:
            self.pool = AvgPool2dSame(2, 1, ceil_mode=True, count_include_pad=False)
        else:
            self.pool = nn.AvgPool2d(2, p.stride, ceil_mode=True, count_include_pad=False)
        self.conv = ctx.conv_layer(p.inplanes, p.outplanes, 1)
        self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.norm(self.conv(self.pool(x)))
        return result


# The projection of a pre-activation block, by the spec's shortcut (the rules refuse option_a with preact).
PREACT_SHORTCUTS: dict[str, type[nn.Module]] = {"conv": DownsampleConv, "avg_conv": DownsampleAvg}


class PreActBlock(nn.Module):
    """The shared forward: norm1 (the pre-activation) feeds the branch and the projection; no act after the add."""

    convs: tuple[str, ...] = ()  # the branch's conv names, in order
    if TYPE_CHECKING:
        norm1: nn.Module

    def __init__(self, plan: BlockPlan, ctx: LayerContext) -> None:
        super().__init__()
        # Constructed and registered first, as in timm's blocks: its keys come first.
        self.downsample = lookup(PREACT_SHORTCUTS, "shortcut", plan.block.shortcut)(plan, ctx) \
            if plan.shortcut else None
        self._build_branch(plan, ctx)
        self.drop_path = DropPath(plan.drop_path) if plan.drop_path > 0 else None

    def _build_branch(self, plan: BlockPlan, ctx: LayerContext) -> None:
        raise NotImplementedError

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The branch after norm1, up to its last conv."""
        raise NotImplementedError

    def last_conv(self) -> nn.Conv2d:
        """Zero-initialised with zero_init_residual (timm's zero_init_last), so the block starts as identity."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_preact = self.norm1(x)
        shortcut = x
        if self.downsample is not None:
            shortcut = self.downsample(x_preact)
        out = self.residual(x_preact)
        if self.drop_path is not None:
            out = self.drop_path(out)
        return out + shortcut


class PreActBasic(PreActBlock):
    """Two pre-activated 3x3 convs (timm's PreActBasic)."""

    convs = ("conv1", "conv2")

    def _build_branch(self, plan: BlockPlan, ctx: LayerContext) -> None:
        g = plan.block.groups
        self.norm1 = ctx.norm_act_layer(plan.inplanes)
        self.conv1 = ctx.conv_layer(plan.inplanes, plan.first_width, 3, stride=plan.stride,
                                    dilation=plan.first_dilation, groups=g)
        self.norm2 = ctx.norm_act_layer(plan.first_width)
        self.conv2 = ctx.conv_layer(plan.first_width, plan.outplanes, 3, dilation=plan.dilation, groups=g)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.conv2(self.norm2(self.conv1(x)))
        return result

    def last_conv(self) -> nn.Conv2d:
        return self.conv2


class PreActBottleneck(PreActBlock):
    """Pre-activated 1x1 reduce, 3x3 (grouped), 1x1 expand (timm's PreActBottleneck); the stride on the 3x3 unless
    stride_on says 1x1, as the paper's Torch code has it."""

    convs = ("conv1", "conv2", "conv3")

    def _build_branch(self, plan: BlockPlan, ctx: LayerContext) -> None:
        on_1x1 = plan.block.stride_on == "1x1"
        self.norm1 = ctx.norm_act_layer(plan.inplanes)
        self.conv1 = ctx.conv_layer(plan.inplanes, plan.first_width, 1, stride=plan.stride if on_1x1 else 1)
        self.norm2 = ctx.norm_act_layer(plan.first_width)
        self.conv2 = ctx.conv_layer(plan.first_width, plan.width, 3, stride=1 if on_1x1 else plan.stride,
                                    dilation=plan.first_dilation, groups=plan.block.groups)
        self.norm3 = ctx.norm_act_layer(plan.width)
        self.conv3 = ctx.conv_layer(plan.width, plan.outplanes, 1)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.conv3(self.norm3(self.conv2(self.norm2(self.conv1(x)))))
        return result

    def last_conv(self) -> nn.Conv2d:
        return self.conv3


# One pre-activation block per block type, keyed as model.blocks.BLOCKS (tests/test_tables.py checks they agree).
PREACT_BLOCKS: dict[str, type[PreActBlock]] = {"basic": PreActBasic, "bottleneck": PreActBottleneck}


class ResNetStage(nn.Module):
    """timm's ResNetStage: the blocks under `blocks`, so the keys are stages.N.blocks.M.*."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.blocks(x)
        return result


class ClassifierHead(nn.Module):
    """timm's ClassifierHead with use_conv=True: global pool (kept 4-D), dropout, a 1x1 conv classifier, flatten."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.global_pool: nn.Module | None = None
        self.drop = nn.Dropout(dropout) if dropout > 0 else None
        self.fc: nn.Module | None = None
        self.flatten: nn.Module | None = None

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool is not None:
            x = self.global_pool(x)
        if self.drop is not None:
            x = self.drop(x)
        if not pre_logits and self.fc is not None:
            x = self.fc(x)
        if self.flatten is not None:
            x = self.flatten(x)
        return x


def _stem(spec: ResNetSpec, ctx: LayerContext) -> nn.Sequential:
    """timm's create_resnetv2_stem with preact=True: conv (or conv1..3 with norm1, norm2 between), then the pool;
    no norm after the last conv, as the first block's norm1 is its pre-activation."""
    c = spec.stem.convs
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    prev = spec.in_channels
    many = len(c.widths) > 1
    for i, width in enumerate(c.widths):
        if i:
            layers[f"norm{i}"] = ctx.norm_act_layer(prev)
        kernel, stride = (c.kernel, c.stride) if i == 0 else (3, 1)
        layers[f"conv{i + 1}" if many else "conv"] = ctx.conv_layer(prev, width, kernel, stride=stride)
        prev = width
    pool = make_stem_pool(spec.stem, ctx)
    if isinstance(pool, nn.Sequential):  # max_fixed: its pad and pool are the stem's own children in timm
        layers.update(pool.named_children())
    elif not isinstance(pool, nn.Identity):
        layers["pool"] = pool
    return nn.Sequential(layers)


class ResNetV2(TimmInterface):
    """A pre-activation ResNet built from a spec with `preact: true`, with timm's ResNetV2 names and init and the
    same model interface as ResNet (num_classes, num_features, get_classifier, reset_classifier,
    forward_features, forward_head, pretrained_cfg, feature_info)."""

    def __init__(self, spec: ResNetSpec) -> None:
        super().__init__()
        one_conv = len(spec.stem.convs.widths) == 1
        # Feature 0 is the stem's last conv output, before its pool (no norm follows it), as timm's feature_info.
        stages = self._set_up(spec, "stem.conv" if one_conv else f"stem.conv{len(spec.stem.convs.widths)}", "stages.")
        ctx = LayerContext.from_spec(spec)
        self.stem = _stem(spec, ctx)
        # The stem's modules up to its last conv: feature 0 is that conv's output, as timm's feature_info says.
        self._stem_convs = max(i for i, n in enumerate(self.stem._modules) if n.startswith("conv")) + 1
        self.stages = nn.Sequential(OrderedDict(
            (str(sp.index - 1), ResNetStage([lookup(PREACT_BLOCKS, "block type", bp.block.type)(bp, ctx)
                                             for bp in sp.blocks])) for sp in stages))
        self.norm: nn.Module | None = None
        self.head: ClassifierHead | None = None
        if spec.features is None:
            self.norm = ctx.norm_act_layer(self.num_features)
            if spec.head is not None:
                self.head = ClassifierHead(spec.head.dropout)
                self.reset_classifier(spec.head.num_classes, "avg")
        self.pretrained_cfg = pretrained_cfg(spec, stages, self.num_classes,
                                             first_conv="stem.conv" if one_conv else "stem.conv1", classifier="head.fc")
        self._init_weights(spec.zero_init_residual)

    def _init_weights(self, zero_init_last: bool) -> None:
        # timm's resnetv2._init_weights, in module order: the conv classifier N(0, 0.01), other convs He-normal,
        # BatchNorm and GroupNorm (the Act subclasses too) ones and zeros; FRN and EvoNorm keep their constants.
        fc = self.head.fc if self.head is not None else None
        for m in self.modules():
            if m is fc and isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.zeros_(cast(torch.Tensor, m.bias))
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, PreActBlock):
                    nn.init.zeros_(m.last_conv().weight)

    def get_classifier(self) -> nn.Module:
        """The classifier (head.fc), or an Identity when there is none (timm's get_classifier)."""
        fc = self.head.fc if self.head is not None else None
        return fc if fc is not None else nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier of num_classes outputs (0: none, forward returns the pooled features); global_pool
        "avg" pools, "" keeps the unpooled map (timm's reset_classifier)."""
        pool = self._classifier_pool(num_classes, global_pool)
        if self.head is None:
            self.head = ClassifierHead(0.0)
        self.global_pool, self.num_classes = pool, num_classes
        self.head.global_pool = nn.AdaptiveAvgPool2d(1) if pool == "avg" else None
        self.head.flatten = nn.Flatten(1) if pool == "avg" else None
        self.head.fc = None
        if num_classes:
            p = next(self.parameters(), None)
            self.head.fc = nn.Conv2d(self.num_features, num_classes, 1, bias=True,
                                     device=None if p is None else p.device, dtype=None if p is None else p.dtype)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The last stage's output and the maps `features` asks for, in network order."""
        keep = self._keep
        maps: list[torch.Tensor] = []
        if keep[0]:  # the stem's last conv output, before its pool
            for i, m in enumerate(self.stem):
                x = m(x)
                if i + 1 == self._stem_convs:
                    maps.append(x)
        else:
            x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if keep[i + 1]:
                maps.append(x)
        return x, maps

    @torch.jit.export
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output after the final norm+act, unpooled (timm's forward_features)."""
        x = self._run(x)[0]
        if self.norm is not None:
            x = self.norm(x)
        return x

    @torch.jit.export
    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (unless global_pool is ""), dropout, then the classifier (unless pre_logits or there is none)."""
        if self.head is None:
            return x
        result: torch.Tensor = self.head(x, pre_logits)
        return result

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features is not None:
            return self._run(x)[1]
        return self.forward_head(self.forward_features(x), False)
