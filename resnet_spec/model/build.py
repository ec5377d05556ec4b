"""Compile a ResNetSpec into an nn.Module, constructing and initialising exactly as torchvision does."""
from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .layers import BasicBlock, Bottleneck, make_act, make_anti_alias, make_norm, make_shortcut
from ..spec.layout import StagePlan, plan, stem_conv_reduction
from ..spec.types import ResNetSpec


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
        self._build_stem(spec)
        self.stage_names: list[str] = []
        for sp in stages:
            name = f"layer{sp.index}"  # name kept for weight compatibility
            self.add_module(name, self._make_layer(spec, sp))
            self.stage_names.append(name)
        # Feature 0 is the stem's activation, before its pool, as in timm's feature_info and features_only.
        self.feature_info = [dict(index=0, module="relu", num_chs=spec.stem.out_channels,
                                  reduction=stem_conv_reduction(spec))]
        self.feature_info += [dict(index=sp.index, module=f"layer{sp.index}", num_chs=sp.out_channels,
                                   reduction=sp.reduction) for sp in stages]
        self.features = spec.features
        self.num_features = self.feature_info[-1]["num_chs"]
        if spec.head is not None and spec.features is None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.drop = nn.Dropout(spec.head.dropout) if spec.head.dropout > 0 else None
            self.fc = nn.Linear(self.num_features, spec.head.num_classes)
        else:
            self.avgpool = self.drop = self.fc = None
        self._init_weights(spec.zero_init_residual)

    def _build_stem(self, spec: ResNetSpec) -> None:
        st, c = spec.stem, spec.stem.out_channels
        if st.type in ("deep", "deep_tiered"):
            w0 = 3 * (st.width // 4) if st.type == "deep_tiered" else st.width
            # A Sequential named conv1 (conv1.0..6), as timm's deep stem, for weight compatibility.
            self.conv1: nn.Module = nn.Sequential(
                nn.Conv2d(spec.in_channels, w0, 3, stride=2, padding=1, bias=st.bias),
                make_norm(spec.norm, w0), make_act(spec.activation),
                nn.Conv2d(w0, st.width, 3, stride=1, padding=1, bias=st.bias),
                make_norm(spec.norm, st.width), make_act(spec.activation),
                nn.Conv2d(st.width, c, 3, stride=1, padding=1, bias=st.bias))
        elif st.type == "cifar":
            self.conv1 = nn.Conv2d(spec.in_channels, c, 3, stride=1, padding=1, bias=st.bias)
        else:
            self.conv1 = nn.Conv2d(spec.in_channels, c, 7, stride=2, padding=3, bias=st.bias)
        self.bn1 = make_norm(spec.norm, c) if st.norm else nn.Identity()
        self.relu = make_act(spec.activation)
        aa = spec.anti_alias
        if st.pool == "conv":  # timm's replace_stem_pool; the name 'maxpool' is kept for weights
            self.maxpool: nn.Module = nn.Sequential(*[m for m in (
                nn.Conv2d(c, c, 3, stride=1 if aa != "none" else 2, padding=1, bias=False),
                make_anti_alias(aa, c, 2) if aa != "none" else None,
                make_norm(spec.norm, c), make_act(spec.activation)) if m is not None])
        elif st.pool == "max" and aa == "avg":
            self.maxpool = nn.AvgPool2d(2)
        elif st.pool == "max" and aa == "blur":
            self.maxpool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), make_anti_alias(aa, c, 2))
        elif st.pool == "max":
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.maxpool = nn.Identity()

    @staticmethod
    def _make_layer(spec: ResNetSpec, sp: StagePlan) -> nn.Sequential:
        layers = []
        for bp in sp.blocks:
            # The shortcut is constructed before its block, as in torchvision's _make_layer.
            down = (make_shortcut(bp.block, spec.norm, bp.inplanes, bp.outplanes, bp.stride, bp.dilation,
                                  bp.first_dilation) if bp.shortcut else None)
            common = dict(stride=bp.stride, downsample=down, dilation=bp.dilation, first_dilation=bp.first_dilation,
                          block=bp.block, norm=spec.norm, activation=spec.activation, anti_alias=spec.anti_alias,
                          drop_path=bp.drop_path)
            if bp.block.type == "bottleneck":
                layers.append(Bottleneck(bp.inplanes, bp.planes, bp.outplanes, bp.width, **common))
            else:
                layers.append(BasicBlock(bp.inplanes, bp.planes, bp.outplanes, **common))
        return nn.Sequential(*layers)

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
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_norm().weight)

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
        x = torch.flatten(self.avgpool(x), 1)
        if self.drop is not None:
            x = self.drop(x)
        return self.fc(x)

    def _forward_features_list(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        out = [x] if 0 in self.features else []
        x = self.maxpool(x)
        for i, name in enumerate(self.stage_names, 1):
            x = getattr(self, name)(x)
            if i in self.features:
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

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.FILLS and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))
