"""Model files: a state_dict with the resolved spec embedded, saved atomically, loaded without pickle code."""
from __future__ import annotations

import pickle
import re
import stat
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError, SpecError
from ..fileio import atomic_write
from ..spec.types import ResNetSpec
from ..spec.yamlio import clip

FORMAT = "resnet-spec/1"
# weights_only=True could run code below torch 2.6 (CVE-2025-32434); 2.10 also fixed memory corruption in
# its unpickler (CVE-2026-24747), which this project's floor cannot demand yet.
SAFE_TORCH = (2, 6)
_GLOBAL = re.compile(r"GLOBAL (\S+)")  # how torch's weights-only unpickler names a refused import


def save_model(path: str | Path, model: nn.Module, spec: ResNetSpec, **extra: object) -> Path:
    """Write {format, name, spec, state_dict, **extra} to path atomically."""
    payload = {"format": FORMAT, "name": spec.name, "spec": spec.data, "state_dict": model.state_dict(), **extra}
    return atomic_write(path, lambda f: torch.save(payload, f))


def _regular_file(path: str | Path) -> Path:
    """path, if it is a non-empty regular file; a one-line InputError otherwise."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path}: is not a regular file (a pipe, socket or device)")
    if st.st_size == 0:
        raise InputError(f"{path}: empty file, not a checkpoint")
    return p


def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with torch.load(weights_only=True): tensors and plain data only, no code."""
    p = _regular_file(path)
    if _torch_version() < SAFE_TORCH:
        raise InputError(f"{path}: not loaded: torch {torch.__version__}'s weights-only loading can run code "
                           "from the file (CVE-2025-32434); upgrade to torch 2.6 or later")
    try:
        with p.open("rb") as f:
            head = f.read(4)
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr; the outcome is what matters
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise InputError(f"{path}: a truncated or corrupt checkpoint") from None
        # weights_only refuses before calling anything, so a refused file has run nothing.
        found = _GLOBAL.search(str(e))
        what = f"it asks for the Python object {found.group(1)}" if found else \
            "its pickle uses instructions that weights-only loading does not allow"
        raise InputError(f"{path}: refused: {what}; only tensors and plain data are loaded, "
                           "and nothing in the file was run") from None
    except Exception:  # a truncated zip, a text file, a foreign format: all unusable input
        kind = "a truncated or corrupt checkpoint" if head == b"PK\x03\x04" else "not a torch checkpoint"
        raise InputError(f"{path}: {kind}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    return obj


def state_dict_of(obj: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded file: its `state_dict` entry, or the file itself when it is a bare state_dict."""
    sd = obj.get("state_dict", obj)
    if not isinstance(sd, dict) or not sd or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                     for k, v in sd.items()):
        raise InputError(f"{path}: holds no state_dict (a mapping of names to tensors)")
    return sd


def load_weights(model: nn.Module, path: str | Path, state: dict[str, torch.Tensor] | None = None,
                 name: str | None = None) -> list[str]:
    """Load a checkpoint's (or a .safetensors file's) tensors into model strictly; return warnings (NaN or
    infinite values). A file that does not fit is refused with the names and shapes that differ.
    `state` (and the `name` of the spec it was saved from) skips reading `path` again."""
    if state is not None:
        obj: dict[str, Any] = {"state_dict": state, **({"name": name} if name else {})}
    elif str(path).endswith(".safetensors"):
        obj = {"state_dict": _load_safetensors(path)}
    else:
        obj = load_file(path)
    sd = state_dict_of(obj, path)
    diff = fit_diff(model.state_dict(), sd)
    if diff:
        saved = f" (saved from {clip(obj['name'])})" if isinstance(obj.get("name"), str) else ""
        raise InputError(f"{path}: weights{saved} do not fit this model: {diff}")
    model.load_state_dict(sd, strict=True)
    bad = [k for k, t in sd.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if not bad:
        return []
    return [f"{path}: {len(bad)} of {len(sd)} tensors hold NaN or infinite values ({_some([_name(k) for k in bad])})"]


def _load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A .safetensors file: a JSON header and raw tensors, no pickle at all (audited, header capped at 100 MB)."""
    p = _regular_file(path)
    try:
        from safetensors.torch import load_file as load_safetensors
    except ImportError:
        raise InputError('reading .safetensors needs safetensors: pip install "resnet-spec[export]"') from None
    try:
        return load_safetensors(str(p))
    except Exception:  # a truncated file, a foreign format: unusable input
        raise InputError(f"{path}: a truncated or corrupt safetensors file") from None


def _torch_version() -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def fit_diff(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str:
    """What keeps `got` from loading strictly where `want` is expected, in one line; empty when it fits."""
    missing = [_name(k) for k in want if k not in got]
    extra = [_name(k) for k in got if k not in want]
    shapes = [f"{_name(k)}: {_shape(got[k])} in the file, {_shape(want[k])} in the model"
              for k in want if k in got and got[k].shape != want[k].shape]
    return key_mismatch(missing, extra, shapes)


def key_mismatch(missing: list[str], extra: list[str], shapes: list[str],
                 show: Callable[[list[str]], list[str]] = list) -> str:
    """Missing, unexpected and reshaped keys as one clause each: the count, then a few of them as `show` words
    them (the reshaped ones come already worded)."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_some(show(missing))})")
    if extra:
        parts.append(f"{len(extra)} unexpected ({_some(show(extra))})")
    if shapes:
        parts.append(f"{len(shapes)} of another shape ({_some(shapes, 2, '; ')})")
    return ", ".join(parts)


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape) or "scalar"


def _name(key: str) -> str:
    return clip(key)[1:-1]  # a key from a stranger's file: escaped and cut short


def _some(names: list[str], n: int = 3, sep: str = ", ") -> str:
    shown = sep.join(names[:n])
    return shown + (f"{sep}and {len(names) - n} more" if len(names) > n else "")


def spec_from_checkpoint(obj: dict[str, Any], path: str | Path) -> ResNetSpec:
    """The spec embedded in a resnet-spec checkpoint, validated like a spec file."""
    from ..spec import rules, schema
    from ..spec.resolve import Resolved
    from ..spec.types import from_data
    if obj.get("format") != FORMAT or not isinstance(obj.get("spec"), dict):
        raise InputError(f"{path}: not a resnet-spec checkpoint (no embedded spec)")
    # No line or column: errors name the file and the JSON path only (a pickle has no lines).
    res = Resolved(str(path), obj["spec"], {(): (str(path), 0, 0)}, {}, {}, [str(path)])
    errors = schema.check(res)
    if not errors:
        spec = from_data(obj["spec"], str(obj.get("name") or Path(path).stem))
        errors = rules.check(spec, res)
    if errors:
        raise SpecError(errors)
    return spec
