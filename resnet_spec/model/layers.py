"""The small modules residual networks are made of, and one name -> factory table per kind.

Kinds: norm (NORMS, and NORM_ACTS for a norm fused with its activation), conv (CONVS), activation
(ACTIVATIONS), anti-aliasing (ANTI_ALIASES), attention (ATTENTIONS) and shortcut (SHORTCUTS). Each table's
keys are the schema's enum for that field; an unknown name is a ValueError from registry.lookup, never a
fallback. Module names follow torchvision, then timm.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import lookup
from ..spec.layout import BlockPlan
from ..spec.types import AttentionSpec, ConvSpec, NormSpec, ResNetSpec


def _batchnorm(norm: NormSpec, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, eps=norm.eps, momentum=norm.momentum)


def _groupnorm(norm: NormSpec, channels: int) -> nn.Module:
    return nn.GroupNorm(norm.groups, channels, eps=norm.eps)


class FilterResponseNormTlu2d(nn.Module):
    """Filter Response Normalization with its thresholded linear unit (Singh and Krishnan 2019), as timm computes
    it: y = max(weight * x * rsqrt(mean_hw(x^2) + eps) + bias, tau), statistics in float32."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.tau = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = (1, -1, 1, 1)
        x = x * x.square().float().mean(dim=(2, 3), keepdim=True).add(self.eps).rsqrt().to(x.dtype).expand(x.shape)
        x = x * self.weight.view(v).to(x.dtype) + self.bias.view(v).to(x.dtype)
        return torch.maximum(x, self.tau.view(v).to(x.dtype))


class EvoNorm2dS0(nn.Module):
    """EvoNorm-S0 (Liu et al. 2020), as timm computes it: x * sigmoid(v * x) / group_std(x) * weight + bias."""

    def __init__(self, channels: int, groups: int = 32, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.v = nn.Parameter(torch.ones(channels))

    def group_std(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = x.reshape(b, self.groups, c // self.groups, h, w)
        std = g.float().var(dim=(2, 3, 4), unbiased=False, keepdim=True).add(self.eps).sqrt().to(x.dtype)
        return std.expand(g.shape).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = (1, -1, 1, 1)
        # timm's order: the gate, then the std. Computing the std first gives equal outputs but gradients that
        # differ in the last bits, as autograd sums the contributions to dL/dx in graph order.
        x = x * (x * self.v.view(v).to(x.dtype)).sigmoid() / self.group_std(x)
        return x * self.weight.view(v).to(x.dtype) + self.bias.view(v).to(x.dtype)


def _frn(norm: NormSpec, channels: int) -> nn.Module:
    return FilterResponseNormTlu2d(channels, eps=norm.eps)


def _evonorm_s0(norm: NormSpec, channels: int) -> nn.Module:
    return EvoNorm2dS0(channels, groups=norm.groups, eps=norm.eps)


NORMS: dict[str, Callable[[NormSpec, int], nn.Module]] = {
    "batchnorm": _batchnorm, "groupnorm": _groupnorm, "frn": _frn, "evonorm_s0": _evonorm_s0}


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm2d, then an activation child `act` (timm's BatchNormAct2d): the same keys as BatchNorm2d."""

    def __init__(self, channels: int, eps: float, momentum: float, act: nn.Module) -> None:
        super().__init__(channels, eps=eps, momentum=momentum)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BatchNorm2d's forward for a float momentum, written out: TorchScript has no super() calls.
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         self.training or self.running_mean is None, float(self.momentum or 0.0), self.eps)
        result: torch.Tensor = self.act(x)
        return result


class GroupNormAct(nn.GroupNorm):
    """GroupNorm, then an activation child `act` (timm's GroupNormAct): the same keys as GroupNorm."""

    def __init__(self, groups: int, channels: int, eps: float, act: nn.Module) -> None:
        super().__init__(groups, channels, eps=eps)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.act(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))
        return result


def _batchnorm_act(norm: NormSpec, channels: int, act: nn.Module) -> nn.Module:
    return BatchNormAct2d(channels, norm.eps, norm.momentum, act)


def _groupnorm_act(norm: NormSpec, channels: int, act: nn.Module) -> nn.Module:
    return GroupNormAct(norm.groups, channels, norm.eps, act)


# The norms a pre-activation net fuses with the network's activation, by norm type. The other NORMS entries
# (frn, evonorm_s0) carry their own nonlinearity and are used as they are.
NORM_ACTS: dict[str, Callable[[NormSpec, int, nn.Module], nn.Module]] = {
    "batchnorm": _batchnorm_act, "groupnorm": _groupnorm_act}


def conv_padding(kernel: int, stride: int = 1, dilation: int = 1) -> int:
    """timm's get_padding: symmetric padding for a conv of this kernel, stride and dilation."""
    return ((stride - 1) + dilation * (kernel - 1)) // 2


class StdConv2d(nn.Conv2d):
    """Weight-standardised conv (Qiao et al. 2019; timm's StdConv2d): at every forward each output channel's
    weights become (w - mean) / sqrt(var + eps) over (in, kh, kw). The stored weight is the raw one."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, eps: float = 1e-6) -> None:
        super().__init__(in_channels, out_channels, kernel, stride=stride,
                         padding=conv_padding(kernel, stride, dilation), dilation=dilation, groups=groups, bias=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True, momentum=0.0,
                         eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _plain_conv(conv: ConvSpec, cin: int, cout: int, kernel: int, stride: int, dilation: int,
                groups: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=conv_padding(kernel, stride, dilation),
                     dilation=dilation, groups=groups, bias=False)


def _std_conv(conv: ConvSpec, cin: int, cout: int, kernel: int, stride: int, dilation: int, groups: int) -> nn.Conv2d:
    return StdConv2d(cin, cout, kernel, stride, dilation, groups, eps=conv.eps)


CONVS: dict[str, Callable[[ConvSpec, int, int, int, int, int, int], nn.Conv2d]] = {
    "plain": _plain_conv, "std": _std_conv}

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": partial(nn.ReLU, inplace=True),
    "silu": partial(nn.SiLU, inplace=True),
    "gelu": nn.GELU,
    "leaky_relu": partial(nn.LeakyReLU, 0.01, inplace=True),  # timm's slope
    "none": nn.Identity,
}


class BlurPool2d(nn.Module):
    """Binomial 3x3 blur with reflect padding, then stride (Zhang 2019; timm's BlurPool2d)."""

    def __init__(self, channels: int, stride: int = 2) -> None:
        super().__init__()
        self.channels, self.stride = channels, stride
        coeffs = torch.tensor([1.0, 2.0, 1.0]) / 4
        filt = (coeffs[:, None] * coeffs[None, :])[None, None].repeat(channels, 1, 1, 1)
        self.filt: torch.Tensor
        self.register_buffer("filt", filt, persistent=False)  # not in timm's state_dict either

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, [1, 1, 1, 1], mode="reflect")
        return F.conv2d(x, self.filt, stride=self.stride, groups=self.channels)


def _avg_anti_alias(channels: int, stride: int) -> nn.Module:
    return nn.AvgPool2d(stride)  # channel-wise, so the channel count plays no part


# "none" is not an entry: it means no module at all, and callers check LayerContext.anti_aliased first.
ANTI_ALIASES: dict[str, Callable[[int, int], nn.Module]] = {"blur": BlurPool2d, "avg": _avg_anti_alias}


@dataclass(frozen=True)
class LayerContext:
    """What the stem and every block share: the norm, the activation, the anti-aliasing kind and the conv kind."""

    norm: NormSpec
    activation: str
    anti_alias: str
    conv: ConvSpec = ConvSpec("plain", 1e-6)

    def __post_init__(self) -> None:
        # Looked up once here, so that an unknown name fails before any module is built.
        lookup(NORMS, "norm type", self.norm.type)
        lookup(ACTIVATIONS, "activation", self.activation)
        lookup(CONVS, "conv type", self.conv.type)
        if self.anti_aliased:
            lookup(ANTI_ALIASES, "anti-alias", self.anti_alias)

    @classmethod
    def from_spec(cls, spec: ResNetSpec) -> LayerContext:
        """The network-wide choices of a spec."""
        return cls(spec.norm, spec.activation, spec.anti_alias, spec.conv)

    @property
    def anti_aliased(self) -> bool:
        """Whether strided ops become a stride-1 op followed by an anti-aliasing layer."""
        return self.anti_alias != "none"

    def norm_layer(self, channels: int) -> nn.Module:
        """A norm over `channels` channels."""
        return lookup(NORMS, "norm type", self.norm.type)(self.norm, channels)

    def norm_act_layer(self, channels: int) -> nn.Module:
        """A norm over `channels` channels followed by the activation, as one module (a pre-activation)."""
        fused = NORM_ACTS.get(self.norm.type)
        if fused is None:
            return self.norm_layer(channels)
        return fused(self.norm, channels, self.act_layer())

    def conv_layer(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1,
                   groups: int = 1) -> nn.Conv2d:
        """A bias-free conv of the spec's conv kind, padded as timm pads it."""
        return lookup(CONVS, "conv type", self.conv.type)(self.conv, cin, cout, kernel, stride, dilation, groups)

    def act_layer(self) -> nn.Module:
        """The network's activation."""
        return lookup(ACTIVATIONS, "activation", self.activation)()

    def aa_layer(self, channels: int, stride: int) -> nn.Module:
        """The stride-`stride` half of an anti-aliased downsampling (timm's create_aa)."""
        return lookup(ANTI_ALIASES, "anti-alias", self.anti_alias)(channels, stride)


def make_divisible(v: float, divisor: int) -> int:
    """timm's make_divisible with round_limit=0: nearest multiple of divisor, at least divisor."""
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


def se_channels(channels: int, ratio: float, divisor: int) -> int:
    """Squeeze-excitation's reduced width: channels * ratio, rounded to a multiple of divisor (timm's rd_channels)."""
    return make_divisible(channels * ratio, divisor)


def eca_kernel_size(channels: int, gamma: float, beta: float) -> int:
    """ECA's 1-D kernel: odd(|log2(channels) + beta| / gamma), at least 3 (Wang et al. 2020)."""
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: global mean, fc1, ReLU, fc2, sigmoid gate (timm's SEModule)."""

    def __init__(self, channels: int, att: AttentionSpec) -> None:
        super().__init__()
        rd = se_channels(channels, att.ratio, att.divisor)
        self.fc1 = nn.Conv2d(channels, rd, kernel_size=1, bias=True)
        # ReLU whatever the network's activation: timm's blocks build SE with its default act_layer.
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s: torch.Tensor = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * s.sigmoid()


class EfficientChannelAttention(nn.Module):
    """ECA: a 1-D conv across the pooled channels, sigmoid gate (Wang et al. 2020; timm's EcaModule)."""

    def __init__(self, channels: int, att: AttentionSpec) -> None:
        super().__init__()
        k = att.kernel_size or eca_kernel_size(channels, att.gamma, att.beta)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.conv(x.mean((2, 3)).view(x.shape[0], 1, -1))
        return x * y.sigmoid().view(x.shape[0], -1, 1, 1)


# "none" is not an entry: a block without attention has no `se` module.
ATTENTIONS: dict[str, Callable[[int, AttentionSpec], nn.Module]] = {
    "se": SqueezeExcite, "eca": EfficientChannelAttention}


def make_attention(att: AttentionSpec, channels: int) -> nn.Module | None:
    """The attention module after a block's last norm, or None for type 'none'."""
    if att.type == "none":
        return None
    return lookup(ATTENTIONS, "attention type", att.type)(channels, att)


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability p in training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty([x.shape[0]] + [1] * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class AvgPool2dSame(nn.AvgPool2d):
    """2x2 stride-1 average pool with TF 'same' zero padding (timm's, used by avg_conv shortcuts when dilated)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(x, [0, 1, 0, 1]), self.kernel_size, self.stride, 0, self.ceil_mode,
                            self.count_include_pad)


class PadShortcut(nn.Module):
    """The paper's parameter-free "option A" shortcut: subsample, then zero-pad the new channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_front = (out_channels - in_channels) // 2
        self.pad_back = out_channels - in_channels - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, [0, 0, 0, 0, self.pad_front, self.pad_back])


def _conv_shortcut(p: BlockPlan, ctx: LayerContext) -> nn.Module:
    """torchvision's downsample ("option B"): a strided conv + norm."""
    k = p.block.shortcut_kernel_size if (p.stride > 1 or p.dilation > 1) else 1
    d = p.first_dilation if k > 1 else 1
    pad = ((p.stride - 1) + d * (k - 1)) // 2
    return nn.Sequential(
        nn.Conv2d(p.inplanes, p.outplanes, k, stride=p.stride, padding=pad, dilation=d, bias=p.block.bias),
        ctx.norm_layer(p.outplanes))


def _avg_conv_shortcut(p: BlockPlan, ctx: LayerContext) -> nn.Module:
    """ResNet-D's downsample (timm's downsample_avg): a 2x2 average pool, then a 1x1 conv + norm."""
    if p.stride == 1 and p.dilation == 1:
        pool: nn.Module = nn.Identity()
    elif p.stride == 1:
        pool = AvgPool2dSame(2, 1, ceil_mode=True, count_include_pad=False)
    else:
        pool = nn.AvgPool2d(2, p.stride, ceil_mode=True, count_include_pad=False)
    # Keys downsample.1/.2 after the pool, as timm's downsample_avg, for weight compatibility.
    return nn.Sequential(pool, nn.Conv2d(p.inplanes, p.outplanes, 1, bias=p.block.bias), ctx.norm_layer(p.outplanes))


def _option_a_shortcut(p: BlockPlan, ctx: LayerContext) -> nn.Module:
    return PadShortcut(p.inplanes, p.outplanes, p.stride)


SHORTCUTS: dict[str, Callable[[BlockPlan, LayerContext], nn.Module]] = {
    "conv": _conv_shortcut, "avg_conv": _avg_conv_shortcut, "option_a": _option_a_shortcut}


def make_shortcut(p: BlockPlan, ctx: LayerContext) -> nn.Module:
    """The projection on the skip path of a block that changes shape."""
    return lookup(SHORTCUTS, "shortcut", p.block.shortcut)(p, ctx)
