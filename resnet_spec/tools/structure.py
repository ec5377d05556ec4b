"""Reading a torchvision or timm ResNet's modules into spec fields: its stem, each block, shortcut and attention.

Every refusal is an Unfit error that names the module with no spelling in the spec language.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.nn.modules.utils import _pair

from ..errors import InputError
from ..model.blocks import BLOCKS
from ..model.layers import ACTIVATIONS, eca_kernel_size, se_channels
from ..spec.schema import defaults
from ..spec.stem import STEMS, StemConvs, stem_convs
from .compare import Reference

# The module type each of the spec's activations builds, read back to its name.
_ACTS = {type(make()): name for name, make in ACTIVATIONS.items()}
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
        if isinstance(conv1, nn.Conv2d):
            convs = [conv1]
        elif isinstance(conv1, nn.Sequential) and len(conv1) == 7 and all(
                isinstance(conv1[i], nn.Conv2d) for i in (0, 3, 6)) and is_norm(conv1[1]) and is_norm(conv1[4]):
            convs = [m for m in conv1 if isinstance(m, nn.Conv2d)]
        else:
            raise self.unfit("conv1", "the stem must be one conv or a deep stem of three 3x3 convs")
        first = convs[0]
        k, st = first.kernel_size, first.stride
        seen = StemConvs(tuple(c.out_channels for c in convs), k[0], st[0])
        # The stem type, and its width w, whose geometry (spec/stem.py) is exactly these convs'.
        match = next(((t, w) for t in STEMS for w in seen.widths if stem_convs(t, w) == seen), None)
        if match is None or k[0] != k[1] or st[0] != st[1] or first.padding != (seen.padding, seen.padding):
            raise self.unfit("conv1", f"stem convs of widths {', '.join(map(str, seen.widths))}, the first "
                                      f"{k[0]}x{k[1]} stride {st[0]}, make none of the spec's stem types "
                                      f"({', '.join(STEMS)})")
        kind, width = match
        in_ch, bias = first.in_channels, first.bias is not None
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
        # The block type whose branch has exactly these convs (BLOCKS[type].convs).
        present = {c: m for c, m in b.named_children() if c.startswith("conv") and not isinstance(m, nn.Identity)}
        conv = {c: m for c, m in present.items() if isinstance(m, nn.Conv2d)}
        kind = next((k for k, cls in BLOCKS.items() if set(cls.convs) == set(present)), None)
        if kind is None or len(conv) != len(present):
            raise self.unfit(name, "a residual block's convs are " + " or ".join(
                f"{', '.join(cls.convs)} ({k})" for k, cls in BLOCKS.items()))
        if part(b, "drop_block") is not None:
            raise self.unfit(f"{name}.drop_block", "DropBlock has no spelling in the spec language")
        aa = part(b, "aa")
        aa_stride = _pair(aa.stride)[0] if aa is not None else None
        f: dict = {"bias": conv["conv1"].bias is not None, "type": kind}
        planes, stride, first_dilation, dilation = BLOCK_READERS[kind](self, name, b, conv, f, aa_stride)
        f.update(self.shortcut(f"{name}.downsample"))
        f["attention"] = self.attention(f"{name}.se", conv[BLOCKS[kind].convs[-1]].out_channels)
        return f, geometry(b, planes, stride, first_dilation, dilation,
                           self.aa_kind(f"{name}.aa") if aa is not None else "none")

    def projection(self, name: str) -> nn.Module | None:
        """The block's shortcut projection module `name`, or None where it has none."""
        parent, _, attr = name.rpartition(".")
        return part(self.model.get_submodule(parent), attr)

    def shortcut(self, name: str) -> dict:
        d = self.projection(name)
        if d is None:
            return {}
        if isinstance(d, nn.Sequential) and len(d) == 2 and isinstance(d[0], nn.Conv2d) and is_norm(d[1]):
            return {"shortcut": "conv", **({"shortcut_kernel_size": d[0].kernel_size[0]} if d[0].stride[0] > 1 else {})}
        if isinstance(d, nn.Sequential) and len(d) == 3 and isinstance(d[1], nn.Conv2d) and is_norm(d[2]):
            return {"shortcut": "avg_conv"}
        raise self.unfit(name, "a shortcut must be conv + norm, or an average pool, conv + norm")

    def attention(self, name: str, channels: int) -> dict:
        """The attention fields of module `name`, which gates `channels` channels."""
        parent, _, attr = name.rpartition(".")
        m = part(self.model.get_submodule(parent), attr)
        if m is None:
            return {"type": "none"}
        default = defaults("attention")
        fc1, fc2, conv = (getattr(m, a, None) for a in ("fc1", "fc2", "conv"))
        if isinstance(fc1, nn.Conv2d) and isinstance(fc2, nn.Conv2d):
            if part(m, "bn") is not None or type(getattr(m, "act", None)) is not nn.ReLU:
                raise self.unfit(name, "squeeze-excitation must be fc1, ReLU, fc2 without a norm")
            ch, rd = fc1.in_channels, fc1.out_channels
            if se_channels(ch, default["ratio"], default["divisor"]) == rd:
                return {"type": "se"}
            return {"type": "se", "ratio": rd / ch, "divisor": 1}
        if isinstance(conv, nn.Conv1d):
            k = conv.kernel_size[0]
            if conv.padding[0] != (k - 1) // 2 or k % 2 == 0:
                raise self.unfit(f"{name}.conv", "an ECA conv has an odd kernel and pads (kernel - 1) / 2")
            if k != eca_kernel_size(channels, default["gamma"], default["beta"]):
                return {"type": "eca", "kernel_size": k}  # timm's pruned nets keep their unpruned widths' kernel
            return {"type": "eca"}
        raise self.unfit(name, "the spec's attention is squeeze-excitation (se) or ECA (eca)")


Geometry = tuple[int, int, int, int | None]  # a block's planes, stride, first dilation and dilation


def geometry(block: nn.Module, planes: int, stride: int, first_dilation: int, dilation: int | None,
             aa: str) -> dict:
    """A block's geometry as the importer consolidates it per stage, with its drop-path rate."""
    drop = part(block, "drop_path")
    return {"channels": planes, "stride": stride, "first_dilation": first_dilation, "dilation": dilation,
            "aa": aa, "drop_path": float(getattr(drop, "drop_prob", getattr(drop, "p", 0.0)) or 0.0)}


def _read_basic(r: Reader, name: str, b: nn.Module, conv: dict[str, nn.Conv2d], f: dict,
                aa_stride: int | None) -> Geometry:
    """A basic block's fields into `f`, and its geometry."""
    conv1, conv2 = conv["conv1"], conv["conv2"]
    expansion = getattr(type(b), "expansion", 1)
    planes, first = conv2.out_channels // expansion, conv1.out_channels
    if planes * expansion != conv2.out_channels:
        planes, expansion = conv2.out_channels, 1
    f["expansion"] = None if expansion == 1 else expansion
    f.update(_first_width_fields(planes, first, [first]))
    return planes, aa_stride or conv1.stride[0], conv1.dilation[0], conv2.dilation[0]


def _first_width_fields(width: int, first: int, widths: list[int]) -> dict:
    """The first conv's width: the inner width itself, timm's reduce_first where it divides it exactly, else
    explicit widths. Every block shows both fields, so a block's own value never falls back to its stage's."""
    if first == width:
        return {"reduce_first": 1, "widths": None}
    if first < width and width // (width // first) == first:
        return {"reduce_first": width // first, "widths": None}
    return {"reduce_first": 1, "widths": widths}


def _read_bottleneck(r: Reader, name: str, b: nn.Module, conv: dict[str, nn.Conv2d], f: dict,
                     aa_stride: int | None) -> Geometry:
    """A bottleneck's fields into `f`, and its geometry; its dilation shows only in the next block (None)."""
    conv1, conv2, conv3 = conv["conv1"], conv["conv2"], conv["conv3"]
    expansion = getattr(type(b), "expansion", 4)
    planes, width, groups, first = conv3.out_channels // expansion, conv2.out_channels, conv2.groups, conv1.out_channels
    if planes * expansion != conv3.out_channels:  # a pruned output width: the stage's channels are it
        planes, expansion = conv3.out_channels, 1
    wpg = (width // groups) * 64 // planes if planes else 0
    f.update(expansion=None if expansion == 4 else expansion, groups=groups)
    if wpg >= 1 and int(planes * wpg / 64) * groups == width:
        f["width_per_group"] = wpg
        f.update(_first_width_fields(width, first, [first, width]))
    else:  # widths no formula gives (timm's pruned networks): written out
        f.update(reduce_first=1, widths=[first, width])
    if conv1.stride[0] > 1:
        stride, f["stride_on"] = conv1.stride[0], "1x1"
    elif aa_stride:
        stride = aa_stride  # where the stride sits is hidden behind the anti-aliasing pool
    else:
        stride = conv2.stride[0]
        if stride > 1:
            f["stride_on"] = "3x3"
    return planes, stride, conv2.dilation[0], None


# One reader per block type, keyed as model.blocks.BLOCKS.
BLOCK_READERS: dict[str, Callable[[Reader, str, nn.Module, dict[str, nn.Conv2d], dict, int | None], Geometry]] = {
    "basic": _read_basic, "bottleneck": _read_bottleneck}


# timm's norm layers of a pre-activation net (ResNetV2), by class name, read back to the spec's norm type.
_PREACT_NORMS = {"BatchNormAct2d": "batchnorm", "GroupNormAct": "groupnorm", "FilterResponseNormTlu2d": "frn",
                 "EvoNorm2dS0": "evonorm_s0"}
_PREACT_STEM_NAMES = {"conv", "conv1", "conv2", "conv3", "norm1", "norm2", "pad", "pool"}
_PREACT_BLOCK_NAMES = {"downsample", "norm1", "conv1", "norm2", "conv2", "norm3", "conv3", "drop_path"}


def preact_norm_fields(m: nn.Module) -> dict | None:
    """The spec's norm fields for one of timm's (or our) pre-activation norm layers; None for anything else."""
    kind = _PREACT_NORMS.get(type(m).__name__)
    if kind == "batchnorm":
        return {"type": kind, "eps": m.eps, "momentum": m.momentum}
    if kind == "groupnorm":
        return {"type": kind, "eps": m.eps, "groups": m.num_groups}
    if kind == "frn":
        return {"type": kind, "eps": m.eps}
    if kind == "evonorm_s0":
        return {"type": kind, "eps": m.eps, "groups": m.groups}
    return None


def conv_fields(m: nn.Conv2d) -> dict:
    """The spec's conv fields: plain, or weight-standardised (a StdConv2d) with its eps."""
    if type(m).__name__ == "StdConv2d":
        return {"type": "std", "eps": m.eps}
    return {"type": "plain"}


class PreactReader(Reader):
    """Reads a pre-activation ResNet (timm's ResNetV2 names: stem, stages.N.blocks.M, norm, head)."""

    def stem(self) -> tuple[dict, int, str]:
        stem = self.model.get_submodule("stem")
        for child, _ in stem.named_children():
            if child not in _PREACT_STEM_NAMES:
                raise self.unfit(f"stem.{child}", "a pre-activation stem has conv (or conv1..3 with norm1, norm2), "
                                                  "pad and pool")
        convs = [m for n, m in stem.named_children() if n.startswith("conv") and isinstance(m, nn.Conv2d)]
        if not convs or len(convs) != sum(n.startswith("conv") for n, _ in stem.named_children()):
            raise self.unfit("stem", "the stem must be one conv or three 3x3 convs")
        first = convs[0]
        seen = StemConvs(tuple(c.out_channels for c in convs), first.kernel_size[0], first.stride[0])
        match = next(((t, w) for t in STEMS for w in seen.widths if stem_convs(t, w) == seen), None)
        if match is None:
            raise self.unfit("stem", f"stem convs of widths {', '.join(map(str, seen.widths))} make none of the "
                                     f"spec's stem types ({', '.join(STEMS)})")
        pad, pool = part(stem, "pad"), part(stem, "pool")
        if pool is None and pad is None:
            kind = "none"
        elif isinstance(pool, nn.MaxPool2d) and (_pair(pool.kernel_size), _pair(pool.stride)) == ((3, 3), (2, 2)):
            fixed = isinstance(pad, nn.ConstantPad2d) and pad.padding == (1, 1, 1, 1) and pad.value == 0.0
            if fixed and _pair(pool.padding) == (0, 0):
                kind = "max_fixed"
            elif pad is None and _pair(pool.padding) == (1, 1):
                kind = "max"
            else:
                raise self.unfit("stem.pool", "the stem pool is a padded 3x3 max pool, or a zero pad and an "
                                              "unpadded one (BiT)")
        else:
            raise self.unfit("stem.pool", "the stem pool of a pre-activation net is a 3x3 stride-2 max pool")
        return {"type": match[0], "width": match[1], "pool": kind}, first.in_channels, "none"

    def block(self, name: str) -> tuple[dict, dict]:
        b = self.model.get_submodule(name)
        for child, _ in b.named_children():
            if child not in _PREACT_BLOCK_NAMES:
                raise self.unfit(f"{name}.{child}", "a pre-activation block has no such part in the spec language")
        conv = {c: m for c, m in b.named_children() if c.startswith("conv") and isinstance(m, nn.Conv2d)}
        kind = next((k for k, cls in BLOCKS.items() if set(cls.convs) == set(conv)), None)
        if kind is None or len(conv) != sum(c.startswith("conv") for c, _ in b.named_children()):
            raise self.unfit(name, "a pre-activation block's convs are conv1, conv2 (basic) or conv1..3 (bottleneck)")
        f: dict = {"bias": conv["conv1"].bias is not None, "type": kind}
        planes, stride, first_dilation, dilation = BLOCK_READERS[kind](self, name, b, conv, f, None)
        f.update(self.shortcut(f"{name}.downsample"))
        f["attention"] = {"type": "none"}
        return f, geometry(b, planes, stride, first_dilation, dilation, "none")

    def shortcut(self, name: str) -> dict:
        d = self.projection(name)
        if d is None:
            return {}
        kind = {"DownsampleConv": "conv", "DownsampleAvg": "avg_conv"}.get(type(d).__name__)
        if kind is None or not isinstance(getattr(d, "conv", None), nn.Conv2d) or part(d, "norm") is not None:
            raise self.unfit(name, "a pre-activation projection is a 1x1 conv, or an average pool and a 1x1 conv, "
                                   "with no norm")
        return {"shortcut": kind}
