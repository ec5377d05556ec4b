"""Reading a torchvision or timm ResNet's modules into spec fields: its stem, each block, shortcut and attention.

Every refusal is an Unfit error that names the module with no spelling in the spec language.
"""
from __future__ import annotations

import math

from torch import nn
from torch.nn.modules.utils import _pair

from ..errors import InputError
from .compare import Reference
from ..model.layers import make_divisible

_ACTS = {nn.ReLU: "relu", nn.SiLU: "silu", nn.GELU: "gelu", nn.LeakyReLU: "leaky_relu", nn.Identity: "none"}
STEM_NAMES = {"conv1", "bn1", "relu", "act1", "maxpool", "avgpool", "global_pool", "fc"}
_BLOCK_NAMES = {"conv1", "bn1", "act1", "relu", "conv2", "bn2", "drop_block", "act2", "aa", "conv3", "bn3", "act3",
                "se", "downsample", "drop_path"}


class Unfit(InputError):
    """A reference whose module `name` has no spelling in the spec language."""


def unfit(ref: Reference, name: str, module: nn.Module | None, why: str) -> Unfit:
    kind = f" ({type(module).__name__})" if module is not None else ""
    return Unfit(f"{ref}: module '{name}'{kind} does not fit the spec language: {why}")


def part(model: nn.Module, name: str) -> nn.Module | None:
    """The child module `name`, or None where it is missing or an Identity placeholder."""
    m = getattr(model, name, None)
    return None if m is None or isinstance(m, nn.Identity) else m


def is_norm(m: object) -> bool:
    """A norm layer the spec language can spell (BatchNorm2d or GroupNorm)."""
    return isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))


def norm_fields(m: nn.Module) -> dict:
    """The spec's norm fields for a BatchNorm2d or GroupNorm."""
    if isinstance(m, nn.GroupNorm):
        return {"type": "groupnorm", "eps": m.eps, "groups": m.num_groups}
    return {"type": "batchnorm", "eps": m.eps, "momentum": m.momentum}


class Reader:
    """Reads one reference model into spec data; every refusal names a module."""

    def __init__(self, ref: Reference, model: nn.Module) -> None:
        self.ref, self.model = ref, model

    def unfit(self, name: str, why: str) -> Unfit:
        return unfit(self.ref, name, self.model.get_submodule(name) if name else self.model, why)

    def activation(self, name: str) -> str:
        m = self.model.get_submodule(name)
        kind = _ACTS.get(type(m))
        if kind is None or (kind == "leaky_relu" and m.negative_slope != 0.01):
            raise self.unfit(name, "the spec's activations are ReLU, SiLU, GELU, LeakyReLU(0.01) or none")
        return kind

    def stem(self) -> tuple[dict, int, str]:
        """The stem fields, the input channels and the anti-aliasing it shows."""
        conv1 = getattr(self.model, "conv1", None)
        if conv1 is None:
            raise unfit(self.ref, "conv1", None, "a ResNet's stem is a module named conv1; this model has none")
        bias = False
        if isinstance(conv1, nn.Conv2d):
            geometry = (conv1.kernel_size, conv1.stride, conv1.padding)
            if geometry == ((7, 7), (2, 2), (3, 3)):
                kind = "conv7x7"
            elif geometry == ((3, 3), (1, 1), (1, 1)):
                kind = "cifar"
            else:
                raise self.unfit("conv1", "a single stem conv must be 7x7 stride 2 or 3x3 stride 1")
            width, in_ch, bias = conv1.out_channels, conv1.in_channels, conv1.bias is not None
        elif isinstance(conv1, nn.Sequential) and len(conv1) == 7 and all(
                isinstance(conv1[i], nn.Conv2d) for i in (0, 3, 6)) and is_norm(conv1[1]) and is_norm(conv1[4]):
            w0, width, out = conv1[0].out_channels, conv1[3].out_channels, conv1[6].out_channels
            if out != 2 * width or w0 not in (width, 3 * (width // 4)):
                raise self.unfit("conv1", f"deep stem widths ({w0}, {width}, {out}) are neither (w, w, 2w) "
                                          "nor (3w/4, w, 2w)")
            kind = "deep" if w0 == width else "deep_tiered"
            in_ch, bias = conv1[0].in_channels, conv1[0].bias is not None
        else:
            raise self.unfit("conv1", "the stem must be one conv or a deep stem of three 3x3 convs")
        pool, aa = self.stem_pool()
        stem = {"type": kind, "width": width, "pool": pool}
        if part(self.model, "bn1") is None:
            stem["norm"] = False
        if bias:
            stem["bias"] = True
        return stem, in_ch, aa

    def stem_pool(self) -> tuple[str, str]:
        m = part(self.model, "maxpool")
        if m is None:
            return "none", "none"
        if isinstance(m, nn.MaxPool2d) and (_pair(m.kernel_size), _pair(m.stride)) == ((3, 3), (2, 2)):
            return "max", "none"
        if type(m) is nn.AvgPool2d and _pair(m.kernel_size) == (2, 2):
            return "max", "avg"  # timm's resnetaa: the stem max pool becomes a 2x2 average pool
        if isinstance(m, nn.Sequential) and len(m) == 2 and isinstance(m[0], nn.MaxPool2d):
            if type(m[1]).__name__ == "BlurPool2d":
                return "max", "blur"
        if isinstance(m, nn.Sequential) and len(m) >= 3 and isinstance(m[0], nn.Conv2d):
            aa = self.aa_kind("maxpool.1") if len(m) == 4 else "none"
            return "conv", aa
        raise self.unfit("maxpool", "the stem pool must be a 3x3 max pool, a strided conv, or anti-aliased")

    def aa_kind(self, name: str) -> str:
        m = self.model.get_submodule(name)
        if type(m).__name__ == "BlurPool2d" and getattr(m, "filt_size", 3) == 3:
            return "blur"
        if type(m) is nn.AvgPool2d and _pair(m.kernel_size) == (2, 2):
            return "avg"
        raise self.unfit(name, "anti-aliasing must be a 3x3 blur pool or a 2x2 average pool")

    def block(self, name: str) -> tuple[dict, dict]:
        """One block's observable fields (a field its structure does not show is left out) and its geometry."""
        b = self.model.get_submodule(name)
        for child, _ in b.named_children():
            if child not in _BLOCK_NAMES:
                raise self.unfit(f"{name}.{child}", "a residual block has no such part in the spec language")
        conv1, conv2, conv3 = (part(b, c) for c in ("conv1", "conv2", "conv3"))
        if not isinstance(conv1, nn.Conv2d) or not isinstance(conv2, nn.Conv2d):
            raise self.unfit(name, "a residual block needs convs named conv1 and conv2")
        if part(b, "drop_block") is not None:
            raise self.unfit(f"{name}.drop_block", "DropBlock has no spelling in the spec language")
        aa = part(b, "aa")
        aa_stride = _pair(aa.stride)[0] if aa is not None else None
        f: dict = {"bias": conv1.bias is not None}
        if conv3 is None:
            planes = conv1.out_channels
            f.update(type="basic", expansion=None if conv2.out_channels == planes else conv2.out_channels // planes)
            stride = aa_stride or conv1.stride[0]
            first_dilation, dilation = conv1.dilation[0], conv2.dilation[0]
        else:
            expansion = getattr(type(b), "expansion", 4)
            planes, width, groups = conv3.out_channels // expansion, conv2.out_channels, conv2.groups
            wpg = (width // groups) * 64 // planes if planes else 0
            if planes * expansion != conv3.out_channels or wpg < 1 or int(planes * wpg / 64) * groups != width:
                raise self.unfit(f"{name}.conv2", f"inner width {width} is not int(channels * w / 64) * groups "
                                                  f"for channels {conv3.out_channels} / {expansion}")
            f.update(type="bottleneck", expansion=None if expansion == 4 else expansion, groups=groups,
                     width_per_group=wpg)
            if conv1.stride[0] > 1:
                stride, f["stride_on"] = conv1.stride[0], "1x1"
            elif aa_stride:
                stride = aa_stride  # where the stride sits is hidden behind the anti-aliasing pool
            else:
                stride = conv2.stride[0]
                if stride > 1:
                    f["stride_on"] = "3x3"
            first_dilation, dilation = conv2.dilation[0], None
        f.update(self.shortcut(f"{name}.downsample"))
        f["attention"] = self.attention(f"{name}.se")
        drop = part(b, "drop_path")
        geometry = {"channels": planes, "stride": stride, "first_dilation": first_dilation, "dilation": dilation,
                    "aa": self.aa_kind(f"{name}.aa") if aa is not None else "none",
                    "drop_path": float(getattr(drop, "drop_prob", getattr(drop, "p", 0.0)) or 0.0)}
        return f, geometry

    def shortcut(self, name: str) -> dict:
        parent, _, attr = name.rpartition(".")
        d = part(self.model.get_submodule(parent), attr)
        if d is None:
            return {}
        if isinstance(d, nn.Sequential) and len(d) == 2 and isinstance(d[0], nn.Conv2d) and is_norm(d[1]):
            return {"shortcut": "conv", **({"shortcut_kernel_size": d[0].kernel_size[0]} if d[0].stride[0] > 1 else {})}
        if isinstance(d, nn.Sequential) and len(d) == 3 and isinstance(d[1], nn.Conv2d) and is_norm(d[2]):
            return {"shortcut": "avg_conv"}
        raise self.unfit(name, "a shortcut must be conv + norm, or an average pool, conv + norm")

    def attention(self, name: str) -> dict:
        parent, _, attr = name.rpartition(".")
        m = part(self.model.get_submodule(parent), attr)
        if m is None:
            return {"type": "none"}
        fc1, fc2, conv = (getattr(m, a, None) for a in ("fc1", "fc2", "conv"))
        if isinstance(fc1, nn.Conv2d) and isinstance(fc2, nn.Conv2d):
            if part(m, "bn") is not None or type(getattr(m, "act", None)) is not nn.ReLU:
                raise self.unfit(name, "squeeze-excitation must be fc1, ReLU, fc2 without a norm")
            ch, rd = fc1.in_channels, fc1.out_channels
            if make_divisible(ch * 0.0625, 8) == rd:
                return {"type": "se"}
            return {"type": "se", "ratio": rd / ch, "divisor": 1}
        if isinstance(conv, nn.Conv1d):
            channels = self.model.get_submodule(parent).conv2.out_channels if not hasattr(
                self.model.get_submodule(parent), "conv3") else self.model.get_submodule(parent).conv3.out_channels
            t = int(abs(math.log(channels, 2) + 1) / 2)
            if conv.kernel_size[0] != max(t if t % 2 else t + 1, 3):
                raise self.unfit(f"{name}.conv", "ECA kernel size is not the one gamma=2, beta=1 give")
            return {"type": "eca"}
        raise self.unfit(name, "the spec's attention is squeeze-excitation (se) or ECA (eca)")
