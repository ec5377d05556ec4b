"""Model files: a state_dict with the resolved spec embedded, saved atomically, loaded without pickle code."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .cli import CommandError
from .errors import SpecError
from .fileio import atomic_write
from .spec import ResNetSpec

FORMAT = "resnet-spec/1"


def save_model(path: str | Path, model: nn.Module, spec: ResNetSpec, **extra: object) -> Path:
    """Write {format, name, spec, state_dict, **extra} to path atomically."""
    payload = {"format": FORMAT, "name": spec.name, "spec": spec.data, "state_dict": model.state_dict(), **extra}
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with torch.load(weights_only=True): tensors and plain data only, no code."""
    p = Path(path)
    if not p.is_file():
        raise CommandError(f"{path}: {'is a directory' if p.is_dir() else 'no such file'}")
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated zip, a foreign pickle, a refused global: all unusable input
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CommandError(f"{path}: not a loadable weights file ({first[:200]})") from None
    if not isinstance(obj, dict):
        raise CommandError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    return obj


def spec_from_checkpoint(obj: dict, path: str | Path) -> ResNetSpec:
    """The spec embedded in a resnet-spec checkpoint, validated like a spec file."""
    from . import rules, schema
    from .resolve import Resolved
    from .spec import from_data
    if obj.get("format") != FORMAT or not isinstance(obj.get("spec"), dict):
        raise CommandError(f"{path}: not a resnet-spec checkpoint (no embedded spec)")
    res = Resolved(str(path), obj["spec"], {}, {}, {}, [str(path)])
    errors = schema.check(res)
    if not errors:
        spec = from_data(obj["spec"], str(obj.get("name") or Path(path).stem))
        errors = rules.check(spec, res)
    if errors:
        raise SpecError(errors)
    return spec
