"""Weights from wherever a user has them: one reader for state_dicts, files, run folders and Hugging Face folders.

`read_weights` finds the tensors, undoes the common wrappings (`{'model': ...}`, DDP's `module.`,
torch.compile's `_orig_mod.`, the transformers key layout) and says what it did; `fit_weights` loads them
into a model strictly, re-initialising only a classifier whose size differs when that is asked for.
Nothing in a file is executed: torch files go through weights-only loading, safetensors through its parser.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..spec.hf import hf_key_to_ours
from .checkpoint import _load_safetensors, _name, _regular_file, key_mismatch, load_file

WRAPPERS = ("model", "state_dict", "model_state_dict")  # torchvision's reference scripts, Lightning, and others
PREFIXES = ("module.", "_orig_mod.")                      # DistributedDataParallel, torch.compile
RUN_FILES = ("best.pt", "last.pt")                        # a train run's folder: the best weights first
CLASSIFIERS = ("fc.", "head.fc.")                         # the head's keys: fc, or head.fc in a pre-activation net


@dataclass(frozen=True)
class Weights:
    """Tensors ready to load into a spec-built model, and what is known of where they came from."""

    state_dict: dict[str, torch.Tensor]
    source: str
    notes: tuple[str, ...] = ()                  # what was done to get here, one sentence each
    spec_data: dict[str, Any] | None = None      # the spec a resnet-spec checkpoint embeds
    name: str | None = None                      # that spec's name
    classes: tuple[str, ...] | None = None       # class names a train checkpoint stores
    config: dict[str, Any] | None = None         # a train checkpoint's settings (image size, ...)

    @property
    def num_classes(self) -> int | None:
        """Rows of the classifier in the weights, if they have one."""
        return classifier_rows(self.state_dict)


def classifier_rows(state: Mapping[str, torch.Tensor]) -> int | None:
    """The class count of a state_dict's classifier: fc (a Linear) or head.fc (a pre-activation net's 1x1 conv)."""
    for key, ndim in (("fc.weight", 2), ("head.fc.weight", 4)):
        w = state.get(key)
        if w is not None:
            return int(w.shape[0]) if w.ndim == ndim else None
    return None


def read_weights(source: Mapping[str, Any] | str | Path) -> Weights:
    """The tensors of a state_dict, a .pt/.pth/.bin/.safetensors file, a train run's folder or a Hugging Face folder."""
    if isinstance(source, Mapping):
        return _from_object(dict(source), "state_dict", [])
    path = Path(source)
    if path.is_dir():
        return _from_folder(path)
    _regular_file(path)
    kind = _foreign_kind(path)
    if kind:
        raise InputError(f"{path}: {kind}, not a checkpoint")
    if path.suffix == ".safetensors":
        return _from_object(dict(_load_safetensors(path)), str(path), [])
    return _from_object(load_file(path), str(path), [])


def _from_folder(path: Path) -> Weights:
    config = path / "config.json"
    if config.is_file():
        return _from_hf_folder(path, config)
    for name in RUN_FILES:
        if (path / name).is_file():
            return _from_object(load_file(path / name), str(path / name), [f"read {name} from the run folder {path}"])
    raise InputError(f"{path}: a folder that is neither a train run (no best.pt or last.pt) nor a Hugging Face "
                     "model (no config.json)")


def _from_hf_folder(path: Path, config: Path) -> Weights:
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{config}: not a readable JSON config ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("model_type") != "resnet":
        kind = cfg.get("model_type") if isinstance(cfg, dict) else None
        raise InputError(f"{config}: a Hugging Face model of type {kind!r}; only transformers' 'resnet' is read")
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            file = path / name
            raw = _load_safetensors(file) if name.endswith(".safetensors") else load_file(file)
            return _from_object(dict(raw), str(file), [f"read the Hugging Face model folder {path}"])
    raise InputError(f"{path}: a Hugging Face folder without model.safetensors or pytorch_model.bin")


def _from_object(obj: dict[str, Any], source: str, notes: list[str]) -> Weights:
    spec_data = obj.get("spec") if isinstance(obj.get("spec"), dict) else None
    name = obj.get("name") if isinstance(obj.get("name"), str) else None
    classes = obj.get("classes")
    classes = tuple(classes) if isinstance(classes, list) and all(isinstance(c, str) for c in classes) else None
    config = obj.get("train_config") if isinstance(obj.get("train_config"), dict) else None
    sd = _unwrap(obj, source, notes)
    sd = _strip_prefixes(sd, notes)
    if any(k.startswith(("resnet.embedder.", "embedder.embedder.")) for k in sd):
        sd = {hf_key_to_ours(k): v for k, v in sd.items()}
        notes.append("mapped the transformers ResNet keys to torchvision's")
    return Weights(sd, source, tuple(notes), spec_data, name, classes, config)


def _unwrap(obj: dict[str, Any], source: str, notes: list[str]) -> dict[str, torch.Tensor]:
    if _is_state_dict(obj):
        return obj
    for key in WRAPPERS:
        inner = obj.get(key)
        if isinstance(inner, dict) and _is_state_dict(inner):
            if key != "state_dict" or "format" not in obj:  # this project's own layout needs no comment
                notes.append(f"took the state_dict under {key!r}")
            return inner
    tops = ", ".join(_name(str(k)) for k in list(obj)[:6])
    raise InputError(f"{source}: holds no state_dict (a mapping of names to tensors); its top-level keys: {tops}")


def _is_state_dict(obj: dict[str, Any]) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _strip_prefixes(sd: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
            notes.append(f"stripped the {prefix!r} prefix from every key")
    return sd


def _foreign_kind(path: Path) -> str:
    """What a file that is not a checkpoint is, by its first bytes and its name; empty for a checkpoint."""
    with path.open("rb") as f:
        head = f.read(512)
    if path.suffix.lower() in (".yaml", ".yml") or head.lstrip().startswith((b"spec_version", b"extends", b"# ")):
        return "a YAML spec (give it as the spec, and the weights separately)"
    if path.suffix.lower() == ".onnx" or (head[:1] == b"\x08" and b"onnx" in head.lower()):
        return "an ONNX model"
    if head[:2] == b"PK":
        import zipfile
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            return ""
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "a TorchScript program"
        if any(n.endswith("archive_format") or "/models/" in n and n.endswith(".json") for n in names):
            return "a torch.export program (.pt2)"
    return ""


def fit_weights(model: nn.Module, weights: Weights, *, reinit_head: bool = False) -> list[str]:
    """Load `weights` into `model` strictly; with reinit_head, a classifier of another size keeps the model's own
    fresh one. Returns what was done; any other mismatch is one InputError with the keys grouped and a hint."""
    want, got = model.state_dict(), weights.state_dict
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    shapes = [k for k in want if k in got and got[k].shape != want[k].shape]
    head_only = all(k.startswith(CLASSIFIERS) for k in missing + extra + shapes)
    notes = list(weights.notes)
    if (missing or extra or shapes) and head_only and reinit_head:
        kept = {k: v for k, v in got.items() if not k.startswith(CLASSIFIERS)}
        model.load_state_dict(kept, strict=False)
        was = weights.num_classes
        now = classifier_rows(want) or 0
        notes.append(f"the classifier was re-initialised: {was} classes in the weights, {now} in the model")
        return notes
    if missing or extra or shapes:
        text = _mismatch(want, got, missing, extra, shapes, weights, head_only)
        raise InputError(f"{weights.source}: the weights do not fit this model: {text}",
                         setting="num_classes" if "use num_classes" in text else None)
    model.load_state_dict(got, strict=True)
    return notes


def _mismatch(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor], missing: list[str], extra: list[str],
              shapes: list[str], weights: Weights, head_only: bool) -> str:
    text = key_mismatch(missing, extra, [_shape_note(k, got, want) for k in shapes], show=_groups)
    if head_only and weights.num_classes is not None:
        text += f"; the weights have {weights.num_classes} classes: use num_classes {weights.num_classes}"
    elif any(k.startswith(("encoder.", "embedder.")) for k in extra):
        text += "; this looks like a Hugging Face backbone without its classifier"
    elif extra and all(k.startswith(("backbone.", "model.", "encoder.")) for k in extra):
        text += f"; every unexpected key starts with {extra[0].split('.')[0]!r}: a wrapped model's state_dict"
    return text


def _groups(keys: list[str]) -> list[str]:
    """Keys grouped by their module, two levels deep: layer4.2.* (6 keys)."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        parts = k.split(".")
        groups.setdefault(".".join(parts[:2]) + ".*" if len(parts) > 2 else k, []).append(k)
    return [_name(g) + f" ({len(ks)} keys)" if len(ks) > 1 else _name(ks[0]) for g, ks in groups.items()]


def _shape_note(key: str, got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> str:
    def shape(t: torch.Tensor) -> str:
        return "x".join(str(s) for s in t.shape) or "scalar"
    return f"{_name(key)}: {shape(got[key])} in the weights, {shape(want[key])} in the model"
