"""Compile a ResNetSpec into an nn.Module, constructing and initialising exactly as torchvision does."""
from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..spec.layout import StagePlan, plan, stem_conv_reduction, stem_sizes
from ..spec.types import ResNetSpec
from .blocks import ResidualBlock, make_block
from .layers import LayerContext
from .stems import make_stem_conv, make_stem_pool

# The schema's maxItems for `stages`. TorchScript cannot loop over attributes by name, so _run names
# every possible stage; hasattr is resolved when the model is scripted, so absent stages cost nothing.
MAX_STAGES = 8
GLOBAL_POOLS = ("avg", "")  # timm's names: "" keeps the unpooled map (with no classifier, as timm requires)


class FeatureInfo(list[dict[str, Any]]):
    """The feature maps a model returns, in order (timm's FeatureInfo): each a dict of index, module, num_chs
    and reduction. It is a list of those dicts, so `info[-1]["reduction"]` works as on timm's plain list."""

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        """`key` of every map (idx None), of map idx, or of the maps listed in idx."""
        if idx is None:
            return [f[key] for f in self]
        if isinstance(idx, int):
            return self[idx][key]
        return [self[i][key] for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        """The channel count of each map."""
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        """The stride of each map relative to the input."""
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        """The module whose output each map is (a name for torchvision's create_feature_extractor)."""
        return self.get("module", idx)


class TimmInterface(nn.Module):
    """What ResNet and the pre-activation ResNetV2 share of timm's model interface: the stages they build, the
    feature maps they return, the checks of reset_classifier's arguments and default_cfg."""

    __jit_unused_properties__ = ["default_cfg"]  # a dict of mixed values, which TorchScript cannot type
    if TYPE_CHECKING:  # set by each subclass; declared for type checkers only (TorchScript reads class annotations)
        pretrained_cfg: dict[str, Any]

    def _set_up(self, spec: ResNetSpec, stem_map: str, stage_prefix: str) -> list[StagePlan]:
        """The stages to build (those after the last feature map a features spec returns are dropped, as by
        timm's features_only), and the feature info: `stem_map` names the module whose output is feature 0,
        stage i is `{stage_prefix}{i}`."""
        self.spec = spec
        stages = plan(spec)
        if len(stages) > MAX_STAGES:
            raise ValueError(f"at most {MAX_STAGES} stages, got {len(stages)}")
        if spec.features is not None:
            stages = stages[:max(spec.features)]
        first = 0 if stage_prefix == "stages." else 1  # timm's stages.0 is torchvision's layer1
        maps = [dict(index=0, module=stem_map, num_chs=spec.stem.out_channels, reduction=stem_conv_reduction(spec))]
        maps += [dict(index=sp.index, module=f"{stage_prefix}{sp.index - 1 + first}", num_chs=sp.out_channels,
                      reduction=sp.reduction) for sp in stages]
        self.stage_names = [m["module"] for m in maps[1:]]
        self.features = spec.features
        # Exactly the maps forward returns: those listed in `features`, or (as timm's) all of them.
        self.feature_info = FeatureInfo(m for m in maps if spec.features is None or m["index"] in spec.features)
        self._keep = [spec.features is not None and i in spec.features for i in range(len(maps))]
        self.num_features = stages[-1].out_channels if stages else spec.stem.out_channels
        self.num_classes = 0
        self.global_pool = ""
        return stages

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's older name for pretrained_cfg."""
        return self.pretrained_cfg

    def _classifier_pool(self, num_classes: int, global_pool: str | None) -> str:
        """reset_classifier's arguments checked as timm's: the pool to use."""
        if self.features is not None:
            raise ValueError("a features spec returns feature maps and has no classifier to reset")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        pool = self.global_pool if global_pool is None else global_pool
        if pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")
        if pool == "" and num_classes > 0:
            raise ValueError("global_pool='' needs num_classes=0: the classifier takes pooled features (as timm)")
        return pool


class ResNet(TimmInterface):
    """A ResNet built from a spec. Attribute names and construction order are torchvision's
    (conv1, bn1, relu, maxpool, layer1..N, avgpool, fc), then timm's for what torchvision lacks,
    so state_dicts load strictly and a seeded build draws the same random numbers.

    It also has timm's model interface: num_classes, num_features, get_classifier, reset_classifier,
    forward_features, forward_head, pretrained_cfg (default_cfg) and feature_info.
    """

    if TYPE_CHECKING:  # for type checkers only: registered by add_module, and only as many as the spec has
        layer1: nn.Module
        layer2: nn.Module
        layer3: nn.Module
        layer4: nn.Module
        layer5: nn.Module
        layer6: nn.Module
        layer7: nn.Module
        layer8: nn.Module

    def __init__(self, spec: ResNetSpec) -> None:
        super().__init__()
        # Feature 0 is the stem's activation, before its pool, as in timm's feature_info and features_only.
        stages = self._set_up(spec, "relu", "layer")
        ctx = LayerContext.from_spec(spec)
        self._build_stem(spec, ctx)
        for sp in stages:  # layerN: names kept for weight compatibility
            self.add_module(f"layer{sp.index}", nn.Sequential(*[make_block(bp, ctx) for bp in sp.blocks]))
        self.avgpool: nn.Module | None = None
        self.drop: nn.Module | None = None
        self.fc: nn.Module | None = None
        if spec.head is not None and spec.features is None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))  # registered before drop and fc, as it runs
            self.drop = nn.Dropout(spec.head.dropout) if spec.head.dropout > 0 else None
            self.reset_classifier(spec.head.num_classes, "avg")
        self.pretrained_cfg = pretrained_cfg(spec, stages, self.num_classes)
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

    def get_classifier(self) -> nn.Module:
        """The classifier (fc), or an Identity when there is none (timm's get_classifier)."""
        return self.fc if self.fc is not None else nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new, freshly initialised classifier of num_classes outputs (0: none, forward returns the pooled
        features); global_pool "avg" pools, "" keeps the unpooled map (timm's reset_classifier)."""
        pool = self._classifier_pool(num_classes, global_pool)
        self.global_pool = pool
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1)) if pool == "avg" else None
        self.num_classes = num_classes
        self.fc = None
        if num_classes:
            p = next(self.parameters(), None)
            self.fc = nn.Linear(self.num_features, num_classes, device=None if p is None else p.device,
                                dtype=None if p is None else p.dtype)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The last stage's output and the maps `features` asks for, in network order."""
        keep = self._keep
        x = self.relu(self.bn1(self.conv1(x)))
        maps: list[torch.Tensor] = [x] if keep[0] else []
        x = self.maxpool(x)
        if hasattr(self, "layer1"):
            x = self.layer1(x)
            if keep[1]:
                maps.append(x)
        if hasattr(self, "layer2"):
            x = self.layer2(x)
            if keep[2]:
                maps.append(x)
        if hasattr(self, "layer3"):
            x = self.layer3(x)
            if keep[3]:
                maps.append(x)
        if hasattr(self, "layer4"):
            x = self.layer4(x)
            if keep[4]:
                maps.append(x)
        if hasattr(self, "layer5"):
            x = self.layer5(x)
            if keep[5]:
                maps.append(x)
        if hasattr(self, "layer6"):
            x = self.layer6(x)
            if keep[6]:
                maps.append(x)
        if hasattr(self, "layer7"):
            x = self.layer7(x)
            if keep[7]:
                maps.append(x)
        if hasattr(self, "layer8"):
            x = self.layer8(x)
            if keep[8]:
                maps.append(x)
        return x, maps

    @torch.jit.export  # scripted even where forward does not call it (a features spec)
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output map, unpooled."""
        return self._run(x)[0]

    @torch.jit.export
    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (unless global_pool is ""), dropout, then the classifier (unless pre_logits or there is none)."""
        if self.avgpool is not None:
            x = torch.flatten(self.avgpool(x), 1)
        if self.drop is not None:
            x = self.drop(x)
        if pre_logits or self.fc is None:
            return x
        logits: torch.Tensor = self.fc(x)
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features is not None:
            return self._run(x)[1]
        return self.forward_head(self.forward_features(x), False)


def pretrained_cfg(spec: ResNetSpec, stages: Sequence[StagePlan], num_classes: int, first_conv: str | None = None,
                   classifier: str = "fc") -> dict[str, Any]:
    """timm's pretrained_cfg keys for the spec's network. The eval transform is the spec's `input.crop_pct`,
    `input.interpolation`, `input.mean` and `input.std` (torchvision's 0.875, bilinear and ImageNet's by default),
    center crop."""
    size = stages[-1].size if stages else stem_sizes(spec, spec.input_size)[-1][1]
    if first_conv is None:
        first_conv = "conv1" if len(spec.stem.convs.widths) == 1 else "conv1.0"
    return dict(architecture=spec.name, input_size=(spec.in_channels, spec.input_size, spec.input_size),
                pool_size=(size, size), crop_pct=spec.eval_transform.crop_pct, crop_mode="center",
                interpolation=spec.eval_transform.interpolation,
                fixed_input_size=False, mean=spec.eval_transform.mean, std=spec.eval_transform.std,
                num_classes=num_classes,
                first_conv=first_conv, classifier=classifier)


def network(spec: ResNetSpec) -> nn.Module:
    """The spec's model: a ResNet, or with `preact: true` the pre-activation ResNetV2 (timm's names)."""
    if spec.preact:
        from .preact import ResNetV2  # it builds on this module's FeatureInfo and pretrained_cfg
        return ResNetV2(spec)
    return ResNet(spec)


def meta_model(spec: ResNetSpec) -> nn.Module:
    """The spec's model with every tensor on the meta device: shapes only, no memory, no RNG."""
    with torch.device("meta"), _SkipMetaFills():
        return network(spec)


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
