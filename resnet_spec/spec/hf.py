"""Hugging Face transformers' ResNet (`ResNetForImageClassification`, the microsoft/resnet-* layout) in spec terms.

Its config becomes spec data, a spec becomes its config, and its state_dict keys map one to one onto
torchvision's: the networks are the same (a 7x7 stem, basic or bottleneck blocks with a 1x1 conv + norm
projection, BatchNorm with eps 1e-5), only the names differ.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import InputError

# (transformers key pattern, torchvision key), tried in order; \1 \2 \3 are stage, block and conv indices.
_KEYS = [
    (r"embedder\.embedder\.convolution\.", "conv1."),
    (r"embedder\.embedder\.normalization\.", "bn1."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution\.", "layer{s}.{b}.downsample.0."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization\.", "layer{s}.{b}.downsample.1."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.convolution\.", "layer{s}.{b}.conv{c}."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.normalization\.", "layer{s}.{b}.bn{c}."),
    (r"classifier\.1\.", "fc."),
]
_OURS = [
    (r"conv1\.", "resnet.embedder.embedder.convolution."),
    (r"bn1\.", "resnet.embedder.embedder.normalization."),
    (r"layer(\d+)\.(\d+)\.downsample\.0\.", "resnet.encoder.stages.{s}.layers.{b}.shortcut.convolution."),
    (r"layer(\d+)\.(\d+)\.downsample\.1\.", "resnet.encoder.stages.{s}.layers.{b}.shortcut.normalization."),
    (r"layer(\d+)\.(\d+)\.conv(\d+)\.", "resnet.encoder.stages.{s}.layers.{b}.layer.{c}.convolution."),
    (r"layer(\d+)\.(\d+)\.bn(\d+)\.", "resnet.encoder.stages.{s}.layers.{b}.layer.{c}.normalization."),
    (r"fc\.", "classifier.1."),
]


def _rename(key: str, table: list[tuple[str, str]], shift: int) -> str | None:
    for pattern, target in table:
        m = re.match(pattern, key)
        if m:
            nums = [int(g) for g in m.groups()]
            s, b, c = (nums + [0, 0, 0])[:3]
            return target.format(s=s + shift, b=b, c=c + shift) + key[m.end():]
    return None


def hf_key_to_ours(key: str) -> str:
    """torchvision's name for a transformers ResNet key (ResNetForImageClassification or ResNetModel)."""
    bare = key[len("resnet."):] if key.startswith("resnet.") else key
    return _rename(bare, _KEYS, 1) or key


def ours_key_to_hf(key: str) -> str:
    """The transformers ResNetForImageClassification name for one of our keys."""
    renamed = _rename(key, _OURS, -1)
    if renamed is None:
        raise InputError(f"{key}: no transformers ResNet counterpart")
    return renamed


def spec_data_from_hf_config(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Spec data for a transformers ResNetConfig (as config.json holds it)."""
    def need(field: str, kind: type | tuple[type, ...]) -> Any:
        value = cfg.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InputError(f"config.json: {field} is missing or not a {getattr(kind, '__name__', kind)}")
        return value
    layer = need("layer_type", str)
    if layer not in ("basic", "bottleneck"):
        raise InputError(f"config.json: layer_type {layer!r} is neither 'basic' nor 'bottleneck'")
    depths, sizes = need("depths", list), need("hidden_sizes", list)
    if len(depths) != len(sizes) or not depths:
        raise InputError("config.json: depths and hidden_sizes must be lists of the same, non-zero length")
    act = cfg.get("hidden_act", "relu")
    if act != "relu":
        # transformers applies hidden_act in the stem and after each block's add only: the convs inside a
        # block keep ReLU. A spec has one activation for all of them, so only ReLU is the same network.
        raise InputError(f"config.json: hidden_act {act!r}: transformers keeps ReLU inside each block and uses "
                         "hidden_act elsewhere, which one spec activation cannot express; only 'relu' is read")
    expansion = 4 if layer == "bottleneck" else 1  # transformers' bottleneck reduction is 4
    first_stride = 2 if cfg.get("downsample_in_first_stage", False) else 1
    labels = cfg.get("id2label")
    num_classes = len(labels) if isinstance(labels, dict) and labels else int(cfg.get("num_labels", 2))
    data: dict[str, Any] = {
        "spec_version": 1,
        "name": name,
        "description": f"transformers ResNet ({layer}, depths {depths})",
        "input": {"channels": int(cfg.get("num_channels", 3))},
        "stem": {"type": "conv7x7", "width": need("embedding_size", int)},
        "block": {"type": layer, "stride_on": "1x1" if cfg.get("downsample_in_bottleneck", False) else "3x3"},
        "stages": [{"channels": size // expansion, "blocks": depth, "stride": first_stride if i == 0 else 2}
                   for i, (depth, size) in enumerate(zip(depths, sizes, strict=True))],
        "head": {"num_classes": num_classes},
    }
    return data


def hf_config_from_spec(data: Mapping[str, Any], stages: list[tuple[int, int, int]],
                        classes: list[str]) -> dict[str, Any]:
    """A transformers ResNetConfig dict for a spec: `stages` holds (out channels, blocks, stride) per stage."""
    block = data.get("block") or {}
    if data.get("preact"):
        raise InputError("a pre-activation ResNet (preact: true) has no transformers ResNet layout")
    if data.get("activation", "relu") != "relu" or block.get("attention") or data.get("anti_alias", "none") != "none":
        raise InputError("only plain ReLU ResNets without attention or anti-aliasing have a transformers layout")
    return {
        "model_type": "resnet",
        "architectures": ["ResNetForImageClassification"],
        "num_channels": (data.get("input") or {}).get("channels", 3),
        "embedding_size": (data.get("stem") or {}).get("width", 64),
        "hidden_sizes": [c for c, _, _ in stages],
        "depths": [n for _, n, _ in stages],
        "layer_type": block.get("type", "bottleneck"),
        "hidden_act": "relu",
        "downsample_in_first_stage": stages[0][2] == 2,
        "downsample_in_bottleneck": block.get("stride_on", "3x3") == "1x1",
        "id2label": {str(i): c for i, c in enumerate(classes)},
        "label2id": {c: i for i, c in enumerate(classes)},
    }
