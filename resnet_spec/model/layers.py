"""Residual blocks and the small modules they use. Names follow torchvision, then timm."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..spec.types import AttentionSpec, BlockSpec, NormSpec


def make_norm(norm: NormSpec, channels: int) -> nn.Module:
    if norm.type == "groupnorm":
        return nn.GroupNorm(norm.groups, channels, eps=norm.eps)
    return nn.BatchNorm2d(channels, eps=norm.eps, momentum=norm.momentum)


def make_act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "gelu":
        return nn.GELU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=True)
    return nn.Identity()


def make_anti_alias(kind: str, channels: int, stride: int) -> nn.Module:
    """The stride-2 half of an anti-aliased downsampling (timm's create_aa)."""
    if kind == "blur":
        return BlurPool2d(channels, stride)
    return nn.AvgPool2d(stride)


def make_divisible(v: float, divisor: int) -> int:
    """timm's make_divisible with round_limit=0: nearest multiple of divisor, at least divisor."""
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


class BlurPool2d(nn.Module):
    """Binomial 3x3 blur with reflect padding, then stride (Zhang 2019; timm's BlurPool2d)."""

    def __init__(self, channels: int, stride: int = 2) -> None:
        super().__init__()
        self.channels, self.stride = channels, stride
        coeffs = torch.tensor([1.0, 2.0, 1.0]) / 4
        filt = (coeffs[:, None] * coeffs[None, :])[None, None].repeat(channels, 1, 1, 1)
        self.register_buffer("filt", filt, persistent=False)  # not in timm's state_dict either

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, [1, 1, 1, 1], mode="reflect")
        return F.conv2d(x, self.filt, stride=self.stride, groups=self.channels)


class AvgPool2dSame(nn.AvgPool2d):
    """2x2 stride-1 average pool with TF 'same' zero padding (timm's, used by avg_conv shortcuts when dilated)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(x, [0, 1, 0, 1]), self.kernel_size, self.stride, 0, self.ceil_mode,
                            self.count_include_pad)


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: global mean, fc1, ReLU, fc2, sigmoid gate (timm's SEModule)."""

    def __init__(self, channels: int, att: AttentionSpec) -> None:
        super().__init__()
        rd = make_divisible(channels * att.ratio, att.divisor)
        self.fc1 = nn.Conv2d(channels, rd, kernel_size=1, bias=True)
        # ReLU whatever the network's activation: timm's blocks build SE with its default act_layer.
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * s.sigmoid()


class EfficientChannelAttention(nn.Module):
    """ECA: a 1-D conv across the pooled channels, sigmoid gate (Wang et al. 2020; timm's EcaModule)."""

    def __init__(self, channels: int, att: AttentionSpec) -> None:
        super().__init__()
        t = int(abs(math.log(channels, 2) + att.beta) / att.gamma)
        k = max(t if t % 2 else t + 1, 3)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.mean((2, 3)).view(x.shape[0], 1, -1))
        return x * y.sigmoid().view(x.shape[0], -1, 1, 1)


def make_attention(att: AttentionSpec, channels: int) -> nn.Module | None:
    if att.type == "se":
        return SqueezeExcite(channels, att)
    if att.type == "eca":
        return EfficientChannelAttention(channels, att)
    return None


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability p in training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PadShortcut(nn.Module):
    """The paper's parameter-free "option A" shortcut: subsample, then zero-pad the new channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = (out_channels - in_channels) // 2, out_channels - in_channels - (out_channels - in_channels) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))


def make_shortcut(block: BlockSpec, norm: NormSpec, inplanes: int, outplanes: int, stride: int,
                  dilation: int, first_dilation: int) -> nn.Module:
    """The projection on the skip path of a block that changes shape."""
    if block.shortcut == "option_a":
        return PadShortcut(inplanes, outplanes, stride)
    if block.shortcut == "avg_conv":
        if stride == 1 and dilation == 1:
            pool: nn.Module = nn.Identity()
        elif stride == 1:
            pool = AvgPool2dSame(2, 1, ceil_mode=True, count_include_pad=False)
        else:
            pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
        # Keys downsample.1/.2 after the pool, as timm's downsample_avg, for weight compatibility.
        return nn.Sequential(pool, nn.Conv2d(inplanes, outplanes, 1, bias=block.bias), make_norm(norm, outplanes))
    k = block.shortcut_kernel_size if (stride > 1 or dilation > 1) else 1
    d = first_dilation if k > 1 else 1
    pad = ((stride - 1) + d * (k - 1)) // 2
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, k, stride=stride, padding=pad, dilation=d, bias=block.bias),
                         make_norm(norm, outplanes))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a skip connection (ResNet-18/34)."""

    def __init__(self, inplanes: int, planes: int, outplanes: int, stride: int, downsample: nn.Module | None,
                 dilation: int, first_dilation: int, block: BlockSpec, norm: NormSpec, activation: str,
                 anti_alias: str, drop_path: float) -> None:
        super().__init__()
        use_aa = anti_alias != "none" and (stride == 2 or first_dilation != dilation)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=1 if use_aa else stride, padding=first_dilation,
                               dilation=first_dilation, bias=block.bias)
        self.bn1 = make_norm(norm, planes)
        self.relu = make_act(activation)
        self.aa = make_anti_alias(anti_alias, planes, stride) if use_aa else None
        self.conv2 = nn.Conv2d(planes, outplanes, 3, padding=dilation, dilation=dilation, bias=block.bias)
        self.bn2 = make_norm(norm, outplanes)
        self.se = make_attention(block.attention, outplanes)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None
        self.act_before_add = block.act_before_add

    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        if self.aa is not None:
            out = self.aa(out)
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        if self.act_before_add:
            out = self.relu(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped) conv, 1x1 expand, with a skip connection (ResNet-50 and deeper).

    The stride sits on the 3x3 conv by default, as in torchvision ("ResNet v1.5", about 0.5% better
    top-1); `stride_on: 1x1` puts it on the first 1x1 as in the paper and Caffe.
    """

    def __init__(self, inplanes: int, planes: int, outplanes: int, width: int, stride: int,
                 downsample: nn.Module | None, dilation: int, first_dilation: int, block: BlockSpec,
                 norm: NormSpec, activation: str, anti_alias: str, drop_path: float) -> None:
        super().__init__()
        use_aa = anti_alias != "none" and (stride == 2 or first_dilation != dilation)
        # With anti-aliasing the strided conv runs at stride 1 and the aa module downsamples after
        # its activation (timm's order); on the 1x1 that happens after act1, on the 3x3 after act2.
        on_1x1 = block.stride_on == "1x1"
        s1 = 1 if (use_aa or not on_1x1) else stride
        s3 = 1 if (use_aa or on_1x1) else stride
        self.conv1 = nn.Conv2d(inplanes, width, 1, stride=s1, bias=block.bias)
        self.bn1 = make_norm(norm, width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=s3, padding=first_dilation, dilation=first_dilation,
                               groups=block.groups, bias=block.bias)
        self.bn2 = make_norm(norm, width)
        self.aa = make_anti_alias(anti_alias, width, stride) if use_aa else None
        self.aa_after_1x1 = on_1x1
        self.conv3 = nn.Conv2d(width, outplanes, 1, bias=block.bias)
        self.bn3 = make_norm(norm, outplanes)
        self.relu = make_act(activation)
        self.se = make_attention(block.attention, outplanes)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None
        self.act_before_add = block.act_before_add

    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        if self.aa is not None and self.aa_after_1x1:
            out = self.aa(out)
        out = self.relu(self.bn2(self.conv2(out)))
        if self.aa is not None and not self.aa_after_1x1:
            out = self.aa(out)
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        if self.act_before_add:
            out = self.relu(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)
