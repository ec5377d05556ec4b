"""`import hf:PATH`: the spec of a Hugging Face transformers ResNet, read from its config.json."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..spec.hf import spec_data_from_hf_config
from ..spec.yamlwrite import to_yaml


def import_hf(path: str | Path) -> tuple[dict[str, Any], str]:
    """Spec data and YAML text for a transformers ResNet folder (or its config.json), validated like a spec file."""
    p = Path(path)
    config = p / "config.json" if p.is_dir() else p
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{config}: no such file (a Hugging Face model folder holds config.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{config}: not a readable JSON config ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("model_type") != "resnet":
        kind = cfg.get("model_type") if isinstance(cfg, dict) else None
        raise InputError(f"{config}: a model of type {kind!r}; only transformers' 'resnet' is read")
    name = (p if p.is_dir() else p.parent).resolve().name.replace("-", "_") or "hf_resnet"
    data = spec_data_from_hf_config(cfg, name)
    from ..model.checkpoint import FORMAT, spec_from_checkpoint
    spec_from_checkpoint({"format": FORMAT, "spec": data, "name": name}, str(config))  # schema and rules
    comment = (f"{name}: imported from the transformers ResNet config {config}.\n"
               "Its weights load with build_model(spec, weights=FOLDER) or `resnet-spec build --weights FOLDER`.")
    return data, to_yaml(data, comment)
