"""Compile a ResNetSpec into an nn.Module, constructing and initialising exactly as torchvision does."""
from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, cast

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..spec.layout import plan, stem_conv_reduction
from ..spec.types import ResNetSpec
from .blocks import ResidualBlock, make_block
from .layers import LayerContext
from .stems import make_stem_conv, make_stem_pool


class ResNet(nn.Module):
    """A ResNet built from a spec. Attribute names and construction order are torchvision's
    (conv1, bn1, relu, maxpool, layer1..N, avgpool, fc), then timm's for what torchvision lacks,
    so state_dicts load strictly and a seeded build draws the same random numbers."""

    def __init__(self, spec: ResNetSpec) -> None:
        super().__init__()
        self.spec = spec
        stages = plan(spec)
        if spec.features is not None:
            # Stages after the last requested feature would never run; timm's features_only drops them too.
            stages = stages[:max(spec.features)]
        ctx = LayerContext.from_spec(spec)
        self._build_stem(spec, ctx)
        self.stage_names: list[str] = []
        for sp in stages:
            name = f"layer{sp.index}"  # name kept for weight compatibility
            self.add_module(name, nn.Sequential(*[make_block(bp, ctx) for bp in sp.blocks]))
            self.stage_names.append(name)
        # Feature 0 is the stem's activation, before its pool, as in timm's feature_info and features_only.
        self.feature_info: list[dict[str, int | str]] = [
            dict(index=0, module="relu", num_chs=spec.stem.out_channels, reduction=stem_conv_reduction(spec))]
        self.feature_info += [dict(index=sp.index, module=f"layer{sp.index}", num_chs=sp.out_channels,
                                   reduction=sp.reduction) for sp in stages]
        self.features = spec.features
        self.num_features = stages[-1].out_channels if stages else spec.stem.out_channels
        self.avgpool: nn.Module | None = None
        self.drop: nn.Module | None = None
        self.fc: nn.Module | None = None
        if spec.head is not None and spec.features is None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.drop = nn.Dropout(spec.head.dropout) if spec.head.dropout > 0 else None
            self.fc = nn.Linear(self.num_features, spec.head.num_classes)
        self._init_weights(spec.zero_init_residual)

    def _build_stem(self, spec: ResNetSpec, ctx: LayerContext) -> None:
        self.conv1 = make_stem_conv(spec.in_channels, spec.stem, ctx)
        self.bn1 = ctx.norm_layer(spec.stem.out_channels) if spec.stem.norm else nn.Identity()
        self.relu = ctx.act_layer()
        self.maxpool = make_stem_pool(spec.stem, ctx)  # name kept for weight compatibility, whatever the pool

    def _init_weights(self, zero_init_residual: bool) -> None:
        # torchvision's ResNet init, in module order; Linear and Conv1d keep PyTorch's default init.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, ResidualBlock):
                    nn.init.zeros_(cast(torch.Tensor, m.last_norm().weight))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features is not None:
            return self._forward_features_list(x)
        x = self.forward_features(x)
        if self.fc is None:
            return x
        x = torch.flatten(self.avgpool(x), 1) if self.avgpool is not None else x
        if self.drop is not None:
            x = self.drop(x)
        logits: torch.Tensor = self.fc(x)
        return logits

    def _forward_features_list(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.features or ()
        x = self.relu(self.bn1(self.conv1(x)))
        out = [x] if 0 in features else []
        x = self.maxpool(x)
        for i, name in enumerate(self.stage_names, 1):
            x = getattr(self, name)(x)
            if i in features:
                out.append(x)
        return out


def meta_model(spec: ResNetSpec) -> ResNet:
    """The spec's model with every tensor on the meta device: shapes only, no memory, no RNG."""
    with torch.device("meta"), _SkipMetaFills():
        return ResNet(spec)


class _SkipMetaFills(TorchFunctionMode):
    """Skips in-place fills (the init functions' normal_, uniform_, fill_, zero_) of meta tensors.

    A meta tensor has no data, so skipping them changes nothing, but running them costs more than
    half of a meta-device build: each goes through torch's Python reference decompositions.
    """

    FILLS = frozenset({torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.fill_, torch.Tensor.zero_})

    def __torch_function__(self, func: Callable[..., Any], types: Collection[type], args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        if func in self.FILLS and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))
