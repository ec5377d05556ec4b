"""Write the spec of an existing torchvision or timm ResNet by reading its module structure.

Nothing is looked up by model name: the stem, every block's type, widths, groups, strides,
dilations, shortcut and attention are read off the instantiated modules. The spec found is then
built on the meta device and checked module by module against the reference, so a structure the
spec language cannot express is refused with the name of the module that does not fit.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

from torch import nn
from torch.nn.modules.utils import _pair

from ..spec.types import ResNetSpec
from ..spec.yamlwrite import to_yaml
from .compare import Reference, key_diff
from .structure import (
    STEM_NAMES,
    PreactReader,
    Reader,
    Unfit,
    conv_fields,
    is_norm,
    norm_fields,
    preact_norm_fields,
    unfit,
)


def _mode(values: list[Any]) -> Any:
    """The most common value (the first seen on a tie); values may be dicts."""
    counts = Counter(json.dumps(v, sort_keys=True) for v in values)
    best = max(counts.values())
    return next(v for v in values if counts[json.dumps(v, sort_keys=True)] == best)


def _consolidate(fields: list[dict[str, Any]]) -> dict[str, Any]:
    """Per field, the most common value among the blocks that show it."""
    keys = dict.fromkeys(k for f in fields for k in f)
    return {k: _mode([f[k] for f in fields if k in f]) for k in keys}


def _default_block(kind: str) -> dict[str, Any]:
    from ..spec.schema import defaults
    return {**defaults("block"), "attention": {"type": "none"}, "type": kind}


def _stages(r: Reader, names: list[str], read: list[list[tuple[dict[str, Any], dict[str, Any]]]],
            top: dict[str, Any]) -> list[dict[str, Any]]:
    stages = []
    for si, (name, blocks) in enumerate(zip(names, read, strict=True)):
        g0 = blocks[0][1]
        for j, (_, g) in enumerate(blocks):
            if g["channels"] != g0["channels"]:
                raise r.unfit(f"{name}.{j}", f"its width {g['channels']} differs from its stage's {g0['channels']}")
        # A bottleneck shows its stage's dilation only from its second block on, else in the next stage's first.
        later = [g["dilation"] for _, g in blocks if g["dilation"]] + [g["first_dilation"] for _, g in blocks[1:]]
        if not later and si + 1 < len(read):
            later = [read[si + 1][0][1]["first_dilation"]]
        stage: dict[str, Any] = {"channels": g0["channels"], "blocks": len(blocks), "stride": g0["stride"]}
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


def _network(ref: Reference, r: Reader, in_channels: int, stem: dict[str, Any], names: list[str],
             read: list[list[tuple[dict[str, Any], dict[str, Any]]]], preact: bool) -> dict[str, Any]:
    """The spec data up to the stages: the blocks' most common fields as the top-level block, the rest per stage."""
    top = _consolidate([f for blocks in read for f, _ in blocks])
    data: dict[str, Any] = {"spec_version": 1, "name": ref.name,
                            "description": f"{ref}, read from its module structure by resnet-spec import"}
    if in_channels != 3:
        data["input"] = {"channels": in_channels}
    if preact:
        data["preact"] = True
    data["stem"] = stem
    base = _default_block(top["type"])
    data["block"] = {"type": top["type"], **{k: v for k, v in top.items() if k != "type" and base.get(k) != v}}
    # Fields the consolidated top-level block leaves at their defaults are compared against those defaults.
    data["stages"] = _stages(r, names, read, {**base, **data["block"]})
    return data


def spec_data(ref: Reference, model: nn.Module) -> dict[str, Any]:
    """The spec data that describes `model`, read from its modules."""
    from ..spec.schema import defaults
    if isinstance(getattr(model, "stages", None), nn.Sequential) and isinstance(getattr(model, "stem", None),
                                                                                 nn.Sequential):
        return _preact_data(ref, model)
    r = Reader(ref, model)
    stages: list[nn.Sequential] = []
    while isinstance(stage := getattr(model, f"layer{len(stages) + 1}", None), nn.Sequential):
        stages.append(stage)
    names = [f"layer{i + 1}" for i in range(len(stages))]
    for child, _ in model.named_children():
        if child not in STEM_NAMES and child not in names:
            raise r.unfit(child, "a ResNet has a stem (conv1, bn1, maxpool), stages layer1..N and a head (fc)")
    if not names:
        raise unfit(ref, "layer1", None, "a ResNet's stages are modules named layer1, layer2, ...")
    stem, in_channels, stem_aa = r.stem()
    activation = r.activation("act1" if hasattr(model, "act1") else "relu")
    read = [[r.block(f"{s}.{j}") for j in range(len(stage))] for s, stage in zip(names, stages, strict=True)]
    for n, _ in model.named_modules():  # one activation everywhere: the spec has a single `activation`
        if n.startswith("layer") and n.rpartition(".")[2] in ("act1", "act2", "act3", "relu") \
                and r.activation(n) != activation:
            raise r.unfit(n, f"every activation must be the stem's ({activation})")
    aa_kinds = {stem_aa} | {g["aa"] for blocks in read for _, g in blocks}
    if len(aa_kinds - {"none"}) > 1:
        raise r.unfit("maxpool", "it mixes blur and average-pool anti-aliasing")
    norms = [(n, m) for n, m in model.named_modules() if is_norm(m)]
    norm = norm_fields(norms[0][1]) if norms else {}
    for n, m in norms:
        if norm_fields(m) != norm:
            raise r.unfit(n, f"every norm must be configured alike, and this one differs from {norms[0][0]}")
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise unfit(ref, "fc", fc, "the head must be a global average pool and a Linear classifier named fc")
    pool = getattr(model, "global_pool", None)
    if pool is not None and getattr(pool, "pool_type", "avg") != "avg":
        raise r.unfit("global_pool", "the head pools by global average only")

    data = _network(ref, r, in_channels, stem, names, read, preact=False)
    head: dict[str, Any] = {"num_classes": fc.out_features}
    drop_rate = float(getattr(model, "drop_rate", 0.0) or 0.0)
    if drop_rate > 0:
        head["dropout"] = drop_rate
    data["head"] = head
    if norm and {**defaults("norm"), **norm} != defaults("norm"):
        data["norm"] = norm
    if activation != "relu":
        data["activation"] = activation
    if aa_kinds - {"none"}:
        data["anti_alias"] = (aa_kinds - {"none"}).pop()
    if _zero_init(stages):
        data["zero_init_residual"] = True
    last_drop = read[-1][-1][1]["drop_path"]
    if last_drop > 0:
        data["drop_path_rate"] = last_drop
    return data


def _preact_data(ref: Reference, model: nn.Module) -> dict[str, Any]:
    """The spec data of a pre-activation ResNet with timm's ResNetV2 names (stem, stages, norm, head)."""
    from ..spec.schema import defaults
    r = PreactReader(ref, model)
    for child, _ in model.named_children():
        if child not in ("stem", "stages", "norm", "head"):
            raise r.unfit(child, "a pre-activation ResNet has a stem, stages, a final norm and a head")
    stem, in_channels, _ = r.stem()
    stage_names = [f"stages.{n}" for n, _ in model.get_submodule("stages").named_children()]
    if not stage_names:
        raise r.unfit("stages", "a pre-activation ResNet has at least one stage")
    names = [f"{s}.blocks" for s in stage_names]
    read = [[r.block(f"{s}.{j}") for j, _ in model.get_submodule(s).named_children()] for s in names]
    norms = [(n, f) for n, m in model.named_modules() if (f := preact_norm_fields(m)) is not None]
    if not norms:
        raise r.unfit("norm", "the norms of a pre-activation net are BatchNormAct2d, GroupNormAct, "
                              "FilterResponseNormTlu2d or EvoNorm2dS0")
    for n, f in norms:
        if f != norms[0][1]:
            raise r.unfit(n, f"every norm must be configured alike, and this one differs from {norms[0][0]}")
    acts = {r.activation(f"{n}.act") for n, m in model.named_modules() if isinstance(getattr(m, "act", None), nn.Module)
            and preact_norm_fields(m) is not None}
    if len(acts) > 1:
        raise r.unfit("norm", "every norm's activation must be the same")
    fc = part_of(model, "head.fc")
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m is not fc]
    conv = conv_fields(convs[0][1])
    for n, m in convs:
        if conv_fields(m) != conv:
            raise r.unfit(n, f"every conv must be of one kind, and this one differs from {convs[0][0]}")
    if fc is not None and not (isinstance(fc, nn.Conv2d) and fc.kernel_size == (1, 1) and fc.bias is not None):
        raise r.unfit("head.fc", "the classifier of a pre-activation net is a 1x1 conv with a bias")
    pool = part_of(model, "head.global_pool")
    if pool is not None and getattr(pool, "pool_type", "avg") != "avg":
        raise r.unfit("head.global_pool", "the head pools by global average only")

    data = _network(ref, r, in_channels, stem, names, read, preact=True)
    head: dict[str, Any] = {"num_classes": fc.out_channels if isinstance(fc, nn.Conv2d) else 0}
    drop = part_of(model, "head.drop")
    drop_rate = float(getattr(drop, "p", 0.0) or getattr(model, "drop_rate", 0.0) or 0.0)
    if drop_rate > 0:
        head["dropout"] = drop_rate
    data["head"] = head
    norm = norms[0][1]
    if {**defaults("norm"), **norm} != defaults("norm"):
        data["norm"] = norm
    if conv != {"type": "plain"}:
        data["conv"] = conv
    activation = acts.pop() if acts else "relu"
    if activation != "relu":
        data["activation"] = activation
    lasts = [getattr(model.get_submodule(f"{s}.{j}"), "conv3" if f["type"] == "bottleneck" else "conv2").weight
             for s, blocks in zip(names, read, strict=True) for j, (f, _) in enumerate(blocks)]
    if lasts and not any(w.is_meta for w in lasts) and all(not w.any() for w in lasts):
        data["zero_init_residual"] = True
    last_drop = read[-1][-1][1]["drop_path"]
    if last_drop > 0:
        data["drop_path_rate"] = last_drop
    return data


def part_of(model: nn.Module, name: str) -> nn.Module | None:
    """The submodule at dotted `name`, or None where it is missing or an Identity placeholder."""
    try:
        m = model.get_submodule(name)
    except AttributeError:
        return None
    return None if isinstance(m, nn.Identity) else m


def _zero_init(stages: list[nn.Sequential]) -> bool:
    """Whether every block's last norm weight is zero: the reference's zero_init_residual (timm's zero_init_last)."""
    lasts = []
    for stage in stages:
        for b in stage:
            n = getattr(b, "bn3", None) or getattr(b, "bn2", None)
            if n is None or getattr(n, "weight", None) is None or n.weight.is_meta:
                return False
            lasts.append(n.weight)
    return bool(lasts) and all(not w.any() for w in lasts)


def _signature(m: nn.Module) -> tuple[object, ...] | None:
    """What a module computes, for the modules that carry weights or change the resolution."""
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return ("conv", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                m.bias is not None, getattr(m, "eps", None))
    if isinstance(m, nn.Linear):
        return ("linear", m.in_features, m.out_features, m.bias is not None)
    if is_norm(m):
        return ("norm", tuple(sorted(norm_fields(m).items())), m.affine)
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        return (type(m).__name__, _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), m.ceil_mode)
    if type(m).__name__ == "BlurPool2d":
        return ("blur", _pair(m.stride)[0])
    return None


def _valid_spec(ref: Reference, data: dict[str, Any]) -> ResNetSpec:
    """`data` as a spec, through the schema and the rules; Unfit naming the first problem."""
    from ..spec import rules, schema
    from ..spec.resolve import Resolved
    from ..spec.types import from_data
    res = Resolved(str(ref), data, {}, {}, {}, [str(ref)])
    errors = schema.check(res)
    if not errors:
        spec = from_data(data, ref.name)
        errors = rules.check(spec, res)
        if not errors:
            return spec
    raise Unfit(f"{ref}: the spec read from its modules is invalid: {errors[0].path}: {errors[0].message}")


def check_fit(ref: Reference, model: nn.Module, data: dict[str, Any]) -> None:
    """Build `data` on the meta device and refuse it, naming a module, unless it matches `model` module by module."""
    from ..model.build import meta_model
    ours = meta_model(_valid_spec(ref, data))
    keys = key_diff(ours.state_dict(), model.state_dict())
    for key, *shapes in keys.missing + keys.extra + keys.mismatched:
        module = key.rpartition(".")[0]
        found = dict(model.named_modules()).get(module)
        raise unfit(ref, module, found, f"the nearest spec builds another state_dict there ({key}: "
                                         + " vs ".join("x".join(map(str, s)) for s in shapes) + ")")
    theirs, mine = dict(model.named_modules()), dict(ours.named_modules())
    for name in list(theirs) + [n for n in mine if n not in theirs]:
        a, b = _signature(theirs[name]) if name in theirs else None, _signature(mine[name]) if name in mine else None
        if a != b and (a is not None or b is not None):
            built = repr(mine[name]) if name in mine else "nothing"
            raise unfit(ref, name, theirs.get(name), f"the nearest spec builds {built} there")


def eval_transform(model: nn.Module) -> dict[str, Any]:
    """The input fields a timm model's pretrained_cfg gives (crop_pct, interpolation, mean, std) that differ from the
    spec's defaults; nothing for a model without one (torchvision's)."""
    from ..spec.schema import defaults
    from ..spec.types import IMAGENET_MEAN, IMAGENET_STD
    cfg = getattr(model, "pretrained_cfg", None)
    if not isinstance(cfg, dict):
        return {}
    default = {**defaults("input"), "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    out: dict[str, Any] = {}
    if isinstance(cfg.get("crop_pct"), float) and 0 < cfg["crop_pct"] <= 1 and cfg["crop_pct"] != default["crop_pct"]:
        out["crop_pct"] = cfg["crop_pct"]
    interpolation = cfg.get("interpolation")
    if interpolation in ("bilinear", "bicubic", "nearest") and interpolation != default["interpolation"]:
        out["interpolation"] = interpolation
    for key in ("mean", "std"):
        value = tuple(float(v) for v in cfg.get(key) or ())
        if value and value != tuple(default[key]):
            out[key] = list(value)
    return out


def import_model(ref: Reference, model: nn.Module) -> tuple[dict[str, Any], str]:
    """The spec data of `model`, checked to build the same structure, and its YAML text."""
    data = spec_data(ref, model)
    check_fit(ref, model, data)
    transform = eval_transform(model)
    if transform:  # `input` written before the stem, as in the shipped specs
        head = {k: data[k] for k in ("spec_version", "name", "description")}
        data = {**head, "input": {**data.get("input", {}), **transform},
                **{k: v for k, v in data.items() if k not in head and k != "input"}}
    n = sum(s["blocks"] for s in data["stages"])
    params = sum(p.numel() for p in model.parameters())
    comment = (f"{ref.name} ({ref}), written by `resnet-spec import {ref}` from the model's module structure.\n"
               f"{data['block']['type']} blocks {[s['blocks'] for s in data['stages']]} ({n} in all), "
               f"{params:,} parameters.")
    return data, to_yaml(data, comment)
