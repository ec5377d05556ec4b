"""load_model: a model and its spec from anything that carries both, without the spec file at hand."""
from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..errors import InputError
from ..spec.hf import spec_data_from_hf_config
from ..spec.types import ResNetSpec
from .checkpoint import FORMAT, spec_from_checkpoint
from .weights import Weights, fit_weights, read_weights


def load_model(path: str | Path) -> tuple[nn.Module, ResNetSpec]:
    """The model (in eval mode, on the CPU) and spec of a resnet-spec checkpoint (`build --out`, train's
    last.pt or best.pt), a train run's folder, or a Hugging Face transformers ResNet folder."""
    weights = read_weights(path)
    spec = spec_of(weights, path)
    return build_with(spec, weights).eval(), spec


def spec_of(weights: Weights, path: str | Path) -> ResNetSpec:
    """The spec the weights carry: a resnet-spec checkpoint's embedded spec, or a transformers config's."""
    if weights.spec_data is not None:
        return spec_from_checkpoint({"format": FORMAT, "spec": weights.spec_data, "name": weights.name},
                                    weights.source)
    config = Path(path) / "config.json"
    if Path(path).is_dir() and config.is_file():
        data = spec_data_from_hf_config(json.loads(config.read_text(encoding="utf-8")), Path(path).name)
        return spec_from_checkpoint({"format": FORMAT, "spec": data, "name": data["name"]}, str(config))
    raise InputError(f"{weights.source}: plain weights without a spec; give the spec too "
                     "(build_model(spec, weights=...))")


def build_with(spec: ResNetSpec, weights: Weights) -> nn.Module:
    """spec's model holding `weights` strictly; a mismatch is fit_weights' InputError, which says what differs."""
    from .factory import build_model
    try:  # the fast path: a meta-device build that takes the tensors as they are, no random init first
        return build_model(spec, init="none", weights=weights.state_dict)
    except (RuntimeError, ValueError):
        pass
    model = build_model(spec)  # to say exactly what does not fit
    fit_weights(model, weights)
    return model
