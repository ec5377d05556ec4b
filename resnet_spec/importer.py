"""Write the spec of an existing torchvision or timm ResNet by reading its module structure.

Nothing is looked up by model name: the stem, every block's type, widths, groups, strides,
dilations, shortcut and attention are read off the instantiated modules. The spec found is then
built on the meta device and checked module by module against the reference, so a structure the
spec language cannot express is refused with the name of the module that does not fit.
"""
from __future__ import annotations

import json
import math
from collections import Counter

from torch import nn
from torch.nn.modules.utils import _pair

from .cli import CommandError
from .compare import Reference, key_diff
from .layers import make_divisible
from .yamlwrite import to_yaml

_ACTS = {nn.ReLU: "relu", nn.SiLU: "silu", nn.GELU: "gelu", nn.LeakyReLU: "leaky_relu", nn.Identity: "none"}
_STEM_NAMES = {"conv1", "bn1", "relu", "act1", "maxpool", "avgpool", "global_pool", "fc"}
_BLOCK_NAMES = {"conv1", "bn1", "act1", "relu", "conv2", "bn2", "drop_block", "act2", "aa", "conv3", "bn3", "act3",
                "se", "downsample", "drop_path"}


class Unfit(CommandError):
    """A reference whose module `name` has no spelling in the spec language."""


def _unfit(ref: Reference, name: str, module: nn.Module | None, why: str) -> Unfit:
    kind = f" ({type(module).__name__})" if module is not None else ""
    return Unfit(f"{ref}: module '{name}'{kind} does not fit the spec language: {why}")


def _get(model: nn.Module, name: str) -> nn.Module | None:
    m = getattr(model, name, None)
    return None if m is None or isinstance(m, nn.Identity) else m


def _is_norm(m: object) -> bool:
    return isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))


def _norm_fields(m: nn.Module) -> dict:
    if isinstance(m, nn.GroupNorm):
        return {"type": "groupnorm", "eps": m.eps, "groups": m.num_groups}
    return {"type": "batchnorm", "eps": m.eps, "momentum": m.momentum}


class _Reader:
    """Reads one reference model into spec data; every refusal names a module."""

    def __init__(self, ref: Reference, model: nn.Module) -> None:
        self.ref, self.model = ref, model

    def unfit(self, name: str, why: str) -> Unfit:
        return _unfit(self.ref, name, self.model.get_submodule(name) if name else self.model, why)

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
            raise _unfit(self.ref, "conv1", None, "a ResNet's stem is a module named conv1; this model has none")
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
                isinstance(conv1[i], nn.Conv2d) for i in (0, 3, 6)) and _is_norm(conv1[1]) and _is_norm(conv1[4]):
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
        if _get(self.model, "bn1") is None:
            stem["norm"] = False
        if bias:
            stem["bias"] = True
        return stem, in_ch, aa

    def stem_pool(self) -> tuple[str, str]:
        m = _get(self.model, "maxpool")
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
        conv1, conv2, conv3 = (_get(b, c) for c in ("conv1", "conv2", "conv3"))
        if not isinstance(conv1, nn.Conv2d) or not isinstance(conv2, nn.Conv2d):
            raise self.unfit(name, "a residual block needs convs named conv1 and conv2")
        if _get(b, "drop_block") is not None:
            raise self.unfit(f"{name}.drop_block", "DropBlock has no spelling in the spec language")
        aa = _get(b, "aa")
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
        drop = _get(b, "drop_path")
        geometry = {"channels": planes, "stride": stride, "first_dilation": first_dilation, "dilation": dilation,
                    "aa": self.aa_kind(f"{name}.aa") if aa is not None else "none",
                    "drop_path": float(getattr(drop, "drop_prob", getattr(drop, "p", 0.0)) or 0.0)}
        return f, geometry

    def shortcut(self, name: str) -> dict:
        parent, _, attr = name.rpartition(".")
        d = _get(self.model.get_submodule(parent), attr)
        if d is None:
            return {}
        if isinstance(d, nn.Sequential) and len(d) == 2 and isinstance(d[0], nn.Conv2d) and _is_norm(d[1]):
            return {"shortcut": "conv", **({"shortcut_kernel_size": d[0].kernel_size[0]} if d[0].stride[0] > 1 else {})}
        if isinstance(d, nn.Sequential) and len(d) == 3 and isinstance(d[1], nn.Conv2d) and _is_norm(d[2]):
            return {"shortcut": "avg_conv"}
        raise self.unfit(name, "a shortcut must be conv + norm, or an average pool, conv + norm")

    def attention(self, name: str) -> dict:
        parent, _, attr = name.rpartition(".")
        m = _get(self.model.get_submodule(parent), attr)
        if m is None:
            return {"type": "none"}
        fc1, fc2, conv = (getattr(m, a, None) for a in ("fc1", "fc2", "conv"))
        if isinstance(fc1, nn.Conv2d) and isinstance(fc2, nn.Conv2d):
            if _get(m, "bn") is not None or type(getattr(m, "act", None)) is not nn.ReLU:
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


def _mode(values: list) -> object:
    """The most common value (the first seen on a tie); values may be dicts."""
    counts = Counter(json.dumps(v, sort_keys=True) for v in values)
    best = max(counts.values())
    return next(v for v in values if counts[json.dumps(v, sort_keys=True)] == best)


def _consolidate(fields: list[dict]) -> dict:
    """Per field, the most common value among the blocks that show it."""
    keys = dict.fromkeys(k for f in fields for k in f)
    return {k: _mode([f[k] for f in fields if k in f]) for k in keys}


def _default_block(kind: str) -> dict:
    from .schema import defaults
    return {**defaults("block"), "attention": {"type": "none"}, "type": kind}


def _stages(r: _Reader, names: list[str], read: list[list[tuple[dict, dict]]], top: dict) -> list[dict]:
    stages = []
    for si, (name, blocks) in enumerate(zip(names, read)):
        g0 = blocks[0][1]
        for j, (_, g) in enumerate(blocks):
            if g["channels"] != g0["channels"]:
                raise r.unfit(f"{name}.{j}", f"its width {g['channels']} differs from its stage's {g0['channels']}")
        # A bottleneck shows its stage's dilation only from its second block on, else in the next stage's first.
        later = [g["dilation"] for _, g in blocks if g["dilation"]] + [g["first_dilation"] for _, g in blocks[1:]]
        if not later and si + 1 < len(read):
            later = [read[si + 1][0][1]["first_dilation"]]
        stage = {"channels": g0["channels"], "blocks": len(blocks), "stride": g0["stride"]}
        if later and later[0] != 1:
            stage["dilation"] = later[0]
        mode = _consolidate([f for f, _ in blocks])
        own = {k: v for k, v in mode.items() if top.get(k) != v}
        if own:
            stage["block"] = own
        effective = {**top, **own}
        overrides = [{"index": j, "block": diff} for j, (f, _) in enumerate(blocks)
                     if (diff := {k: v for k, v in f.items() if effective.get(k) != v})]
        if overrides:
            stage["overrides"] = overrides
        stages.append(stage)
    return stages


def spec_data(ref: Reference, model: nn.Module) -> dict:
    """The spec data that describes `model`, read from its modules."""
    from .schema import defaults
    r = _Reader(ref, model)
    names = []
    while isinstance(getattr(model, f"layer{len(names) + 1}", None), nn.Sequential):
        names.append(f"layer{len(names) + 1}")
    for child, _ in model.named_children():
        if child not in _STEM_NAMES and child not in names:
            raise r.unfit(child, "a ResNet has a stem (conv1, bn1, maxpool), stages layer1..N and a head (fc)")
    if not names:
        raise _unfit(ref, "layer1", None, "a ResNet's stages are modules named layer1, layer2, ...")
    stem, in_channels, stem_aa = r.stem()
    activation = r.activation("act1" if hasattr(model, "act1") else "relu")
    read = [[r.block(f"{s}.{j}") for j in range(len(model.get_submodule(s)))] for s in names]
    for n, m in model.named_modules():  # one activation everywhere: the spec has a single `activation`
        if n.startswith("layer") and n.rpartition(".")[2] in ("act1", "act2", "act3", "relu") \
                and r.activation(n) != activation:
            raise r.unfit(n, f"every activation must be the stem's ({activation})")
    aa_kinds = {stem_aa} | {g["aa"] for blocks in read for _, g in blocks}
    if len(aa_kinds - {"none"}) > 1:
        raise r.unfit("maxpool", "it mixes blur and average-pool anti-aliasing")
    norms = [(n, m) for n, m in model.named_modules() if _is_norm(m)]
    norm = _norm_fields(norms[0][1]) if norms else {}
    for n, m in norms:
        if _norm_fields(m) != norm:
            raise r.unfit(n, f"every norm must be configured alike, and this one differs from {norms[0][0]}")
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise _unfit(ref, "fc", fc, "the head must be a global average pool and a Linear classifier named fc")
    pool = getattr(model, "global_pool", None)
    if pool is not None and getattr(pool, "pool_type", "avg") != "avg":
        raise r.unfit("global_pool", "the head pools by global average only")

    fields = [f for blocks in read for f, _ in blocks]
    top = _consolidate(fields)
    data: dict = {"spec_version": 1, "name": ref.name,
                  "description": f"{ref}, read from its module structure by resnet-spec import"}
    if in_channels != 3:
        data["input"] = {"channels": in_channels}
    data["stem"] = stem
    base = _default_block(top["type"])
    data["block"] = {"type": top["type"], **{k: v for k, v in top.items() if k != "type" and base.get(k) != v}}
    # Fields the consolidated top-level block leaves at their defaults are compared against those defaults.
    data["stages"] = _stages(r, names, read, {**base, **data["block"]})
    head: dict = {"num_classes": fc.out_features}
    if float(getattr(model, "drop_rate", 0.0) or 0.0) > 0:
        head["dropout"] = float(model.drop_rate)
    data["head"] = head
    if norm and {**defaults("norm"), **norm} != defaults("norm"):
        data["norm"] = norm
    if activation != "relu":
        data["activation"] = activation
    if aa_kinds - {"none"}:
        data["anti_alias"] = (aa_kinds - {"none"}).pop()
    if _zero_init(model, names):
        data["zero_init_residual"] = True
    last_drop = read[-1][-1][1]["drop_path"]
    if last_drop > 0:
        data["drop_path_rate"] = last_drop
    return data


def _zero_init(model: nn.Module, stages: list[str]) -> bool:
    """Whether every block's last norm weight is zero: the reference's zero_init_residual (timm's zero_init_last)."""
    lasts = []
    for s in stages:
        for b in model.get_submodule(s):
            n = getattr(b, "bn3", None) or getattr(b, "bn2", None)
            if n is None or getattr(n, "weight", None) is None or n.weight.is_meta:
                return False
            lasts.append(n.weight)
    return bool(lasts) and all(not w.any() for w in lasts)


def _signature(m: nn.Module) -> tuple | None:
    """What a module computes, for the modules that carry weights or change the resolution."""
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return ("conv", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                m.bias is not None)
    if isinstance(m, nn.Linear):
        return ("linear", m.in_features, m.out_features, m.bias is not None)
    if _is_norm(m):
        return ("norm", tuple(sorted(_norm_fields(m).items())), m.affine)
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        return (type(m).__name__, _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), m.ceil_mode)
    if type(m).__name__ == "BlurPool2d":
        return ("blur", _pair(m.stride)[0])
    return None


def check_fit(ref: Reference, model: nn.Module, data: dict) -> None:
    """Build `data` on the meta device and refuse it, naming a module, unless it matches `model` module by module."""
    from . import rules, schema
    from .analysis import meta_model
    from .resolve import Resolved
    from .spec import from_data
    res = Resolved(str(ref), data, {}, {}, {}, [str(ref)])
    errors = schema.check(res)
    spec = from_data(data, ref.name) if not errors else None
    errors = errors or rules.check(spec, res)
    if errors:
        raise Unfit(f"{ref}: the spec read from its modules is invalid: {errors[0].path}: {errors[0].message}")
    ours = meta_model(spec)
    keys = key_diff(ours.state_dict(), model.state_dict())
    for key, *shapes in keys.missing + keys.extra + keys.mismatched:
        module = key.rpartition(".")[0]
        found = dict(model.named_modules()).get(module)
        raise _unfit(ref, module, found, f"the nearest spec builds another state_dict there ({key}: "
                                         + " vs ".join("x".join(map(str, s)) for s in shapes) + ")")
    theirs, mine = dict(model.named_modules()), dict(ours.named_modules())
    for name in list(theirs) + [n for n in mine if n not in theirs]:
        a, b = _signature(theirs[name]) if name in theirs else None, _signature(mine[name]) if name in mine else None
        if a != b and (a is not None or b is not None):
            built = repr(mine[name]) if name in mine else "nothing"
            raise _unfit(ref, name, theirs.get(name), f"the nearest spec builds {built} there")


def import_model(ref: Reference, model: nn.Module) -> tuple[dict, str]:
    """The spec data of `model`, checked to build the same structure, and its YAML text."""
    data = spec_data(ref, model)
    check_fit(ref, model, data)
    n = sum(s["blocks"] for s in data["stages"])
    params = sum(p.numel() for p in model.parameters())
    comment = (f"{ref.name} ({ref}), written by `resnet-spec import {ref}` from the model's module structure.\n"
               f"{data['block']['type']} blocks {[s['blocks'] for s in data['stages']]} ({n} in all), "
               f"{params:,} parameters.")
    return data, to_yaml(data, comment)
