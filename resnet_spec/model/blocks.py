"""Residual blocks: one base that owns the shared tail, and one subclass per block type (the BLOCKS table).

Adding a block type is one ResidualBlock subclass, one BLOCKS entry and the schema's enum.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..registry import lookup
from ..spec.layout import BlockPlan
from .layers import DropPath, LayerContext, make_attention, make_shortcut


class ResidualBlock(nn.Module):
    """A residual branch (the subclass's), then attention, act-before-add, drop path, the shortcut add, activation.

    The base owns the code; each subclass owns the names of its branch, so state_dict keys are the reference's.
    """

    convs: tuple[str, ...] = ()  # the branch's conv names, in order: how a reader tells the block types apart
    if TYPE_CHECKING:
        # Registered by each subclass where its reference registers it. Declared for type checkers only:
        # TorchScript reads class annotations as attribute types, and nn.Module is not one.
        relu: nn.Module

    def __init__(self, plan: BlockPlan, ctx: LayerContext) -> None:
        super().__init__()
        # The shortcut is constructed before the branch, as torchvision's _make_layer builds downsample before
        # its block, so a seeded build draws the same random numbers; it is registered after, as its keys are.
        downsample = make_shortcut(plan, ctx) if plan.shortcut else None
        self._build_branch(plan, ctx)
        self.se = make_attention(plan.block.attention, plan.outplanes)  # name kept for weight compatibility
        self.downsample = downsample
        self.drop_path = DropPath(plan.drop_path) if plan.drop_path > 0 else None
        self.act_before_add = plan.block.act_before_add

    def _build_branch(self, plan: BlockPlan, ctx: LayerContext) -> None:
        """Register the branch's modules (and `relu`), in the reference's order."""
        raise NotImplementedError

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch, up to and including its last norm."""
        raise NotImplementedError

    def last_norm(self) -> nn.Module:
        """The branch's last norm: zero-initialised with zero_init_residual, so the block starts as identity."""
        raise NotImplementedError

    @staticmethod
    def _uses_anti_alias(plan: BlockPlan, ctx: LayerContext) -> bool:
        # timm anti-aliases a block that strides, or the first block of a dilated stage.
        return ctx.anti_aliased and (plan.stride == 2 or plan.first_dilation != plan.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual(x)
        if self.se is not None:
            out = self.se(out)
        if self.act_before_add:
            out = self.relu(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        identity = x
        if self.downsample is not None:
            identity = self.downsample(x)
        # Out of place after an act-before-add: an in-place add would overwrite the (in-place) activation's
        # output, which its backward pass needs.
        out = out + identity if self.act_before_add else out.add_(identity)
        result: torch.Tensor = self.relu(out)
        return result


class BasicBlock(ResidualBlock):
    """Two 3x3 convs with a skip connection (ResNet-18/34)."""

    convs = ("conv1", "conv2")

    def _build_branch(self, plan: BlockPlan, ctx: LayerContext) -> None:
        b = plan.block
        use_aa = self._uses_anti_alias(plan, ctx)
        self.conv1 = nn.Conv2d(plan.inplanes, plan.first_width, 3, stride=1 if use_aa else plan.stride,
                               padding=plan.first_dilation, dilation=plan.first_dilation, bias=b.bias)
        self.bn1 = ctx.norm_layer(plan.first_width)
        self.relu = ctx.act_layer()
        self.aa = ctx.aa_layer(plan.first_width, plan.stride) if use_aa else None
        self.conv2 = nn.Conv2d(plan.first_width, plan.outplanes, 3, padding=plan.dilation, dilation=plan.dilation,
                               bias=b.bias)
        self.bn2 = ctx.norm_layer(plan.outplanes)

    def last_norm(self) -> nn.Module:
        return self.bn2

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        if self.aa is not None:
            out = self.aa(out)
        result: torch.Tensor = self.bn2(self.conv2(out))
        return result


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (grouped) conv, 1x1 expand, with a skip connection (ResNet-50 and deeper).

    The stride sits on the 3x3 conv by default, as in torchvision ("ResNet v1.5", about 0.5% better
    top-1); `stride_on: 1x1` puts it on the first 1x1 as in the paper and Caffe.
    """

    convs = ("conv1", "conv2", "conv3")

    def _build_branch(self, plan: BlockPlan, ctx: LayerContext) -> None:
        b, width = plan.block, plan.width
        use_aa = self._uses_anti_alias(plan, ctx)
        # With anti-aliasing the strided conv runs at stride 1 and the aa module downsamples after
        # its activation (timm's order); on the 1x1 that happens after act1, on the 3x3 after act2.
        on_1x1 = b.stride_on == "1x1"
        s1 = 1 if (use_aa or not on_1x1) else plan.stride
        s3 = 1 if (use_aa or on_1x1) else plan.stride
        self.conv1 = nn.Conv2d(plan.inplanes, plan.first_width, 1, stride=s1, bias=b.bias)
        self.bn1 = ctx.norm_layer(plan.first_width)
        self.conv2 = nn.Conv2d(plan.first_width, width, 3, stride=s3, padding=plan.first_dilation,
                               dilation=plan.first_dilation, groups=b.groups, bias=b.bias)
        self.bn2 = ctx.norm_layer(width)
        self.aa = ctx.aa_layer(plan.first_width if on_1x1 else width, plan.stride) if use_aa else None
        self.aa_after_1x1 = on_1x1
        self.conv3 = nn.Conv2d(width, plan.outplanes, 1, bias=b.bias)
        self.bn3 = ctx.norm_layer(plan.outplanes)
        self.relu = ctx.act_layer()

    def last_norm(self) -> nn.Module:
        return self.bn3

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        if self.aa is not None and self.aa_after_1x1:
            out = self.aa(out)
        out = self.relu(self.bn2(self.conv2(out)))
        if self.aa is not None and not self.aa_after_1x1:
            out = self.aa(out)
        result: torch.Tensor = self.bn3(self.conv3(out))
        return result


BLOCKS: dict[str, type[ResidualBlock]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def make_block(plan: BlockPlan, ctx: LayerContext) -> ResidualBlock:
    """The block `plan` describes, of the type its BlockSpec names."""
    return lookup(BLOCKS, "block type", plan.block.type)(plan, ctx)
