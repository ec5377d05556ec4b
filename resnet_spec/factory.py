"""build_model: the public entry point from a spec (or its file or name) to a ready nn.Module."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from .api import load_spec
from .build import ResNet
from .spec import ResNetSpec, with_num_classes


def build_model(spec_or_path: ResNetSpec | str | Path, num_classes: int | None = None) -> nn.Module:
    """Build the network a spec (or a spec file, or a shipped spec name) describes."""
    spec = spec_or_path if isinstance(spec_or_path, ResNetSpec) else load_spec(spec_or_path)
    if num_classes is not None:
        spec = with_num_classes(spec, num_classes)
    return ResNet(spec)
