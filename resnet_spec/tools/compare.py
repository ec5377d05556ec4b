"""Prove a spec equal to a reference network: state_dict keys and shapes, then outputs on one random input.

References are torchvision or timm classification models, named `torchvision:NAME` or `timm:NAME`.
They are built with random weights; their norm layers' affine weights and running statistics are
then randomised too, so a block wired differently cannot hide behind BN's identity initialisation.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import InputError
from ..spec.types import ResNetSpec

SOURCES = ("torchvision", "timm")
# Largest accepted max|ours - ref| / max|ref|. float64 runs the same ops in the same order, so
# anything above rounding noise is a real difference; float32 leaves room for fused-kernel order.
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}
TIMM_HINT = 'timm is not installed; install it with `pip install timm` (or `pip install "resnet-spec[test]"`)'


@dataclass(frozen=True)
class Reference:
    """A model of another library, by name: torchvision:resnet50, timm:resnet50d."""

    source: str
    name: str

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"


@dataclass(frozen=True)
class KeyDiff:
    """How two state_dicts differ in keys and shapes."""

    ours: int
    theirs: int
    missing: tuple[tuple[str, tuple[int, ...]], ...]    # in the reference only
    extra: tuple[tuple[str, tuple[int, ...]], ...]      # in ours only
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # (key, ours, reference)

    @property
    def same(self) -> bool:
        return not (self.missing or self.extra or self.mismatched)


@dataclass(frozen=True)
class OutputDiff:
    """How two models' outputs on the same input differ."""

    dtype: str
    device: str
    input_shape: tuple[int, ...]
    max_abs: float
    max_rel: float     # max|ours - ref| / max|ref|
    tolerance: float
    shapes_match: bool
    first_difference: tuple[str, float] | None = None  # (module, its max rel diff): where the outputs part ways

    @property
    def same(self) -> bool:
        return self.shapes_match and self.max_rel <= self.tolerance


def parse_reference(text: str) -> Reference:
    source, sep, name = text.partition(":")
    if not sep or source not in SOURCES or not name:
        raise InputError(f"reference '{text}' must be torchvision:NAME or timm:NAME (e.g. torchvision:resnet50)")
    return Reference(source, name)


def _unknown(ref: Reference, names: list[str]) -> InputError:
    close = difflib.get_close_matches(ref.name, names, n=1)
    hint = f"; did you mean '{ref.source}:{close[0]}'?" if close else ""
    return InputError(f"{ref.source} has no model named '{ref.name}'{hint}")


def reference_model(ref: Reference, kwargs: Mapping[str, object] | None = None) -> nn.Module:
    """The reference model with its library's own random initialisation, on the CPU, in eval mode.
    `kwargs` go to its constructor (torchvision's get_model, timm's create_model): num_classes=10, ..."""
    args: dict[str, Any] = dict(kwargs or {})
    if ref.source == "torchvision":
        import torchvision
        names = torchvision.models.list_models(module=torchvision.models)
        if ref.name not in names:
            raise _unknown(ref, names)
        return _construct(ref, lambda: torchvision.models.get_model(ref.name, weights=None, **args), args)
    try:
        import timm
    except ImportError:
        raise InputError(TIMM_HINT) from None
    if not timm.is_model(ref.name):
        raise _unknown(ref, timm.list_models())
    return _construct(ref, lambda: timm.create_model(ref.name, pretrained=False, **args), args)


def _construct(ref: Reference, make: Callable[[], nn.Module], kwargs: Mapping[str, object]) -> nn.Module:
    """make(), in eval mode; a constructor's refusal of the arguments is an InputError naming them."""
    try:
        return make().eval()
    except (TypeError, ValueError, AssertionError, KeyError) as e:
        if not kwargs:
            raise
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise InputError(f"{ref} does not take {args}: {type(e).__name__}: {e}") from None


# Norm layers (timm's and ours, by the same class names) that are no torch norm class but have weight and bias.
_OWN_PARAM_NORMS = ("FilterResponseNormTlu2d", "EvoNorm2dS0")


def randomise_norms_(model: nn.Module, seed: int) -> None:
    """Give every norm layer random affine weights and running statistics (in place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            torch_norm = isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm))
            if not torch_norm and type(m).__name__ not in _OWN_PARAM_NORMS:
                continue
            weight, bias = m.weight, m.bias
            if isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor):
                weight.copy_(torch.rand(weight.shape, generator=g) + 0.5)
                bias.copy_(torch.randn(bias.shape, generator=g) * 0.1)
            tau, v = getattr(m, "tau", None), getattr(m, "v", None)  # FRN's threshold, EvoNorm's gate scale
            if isinstance(tau, torch.Tensor):
                tau.copy_(torch.randn(tau.shape, generator=g) * 0.1)
            if isinstance(v, torch.Tensor):
                v.copy_(torch.rand(v.shape, generator=g) + 0.5)
            mean, var = getattr(m, "running_mean", None), getattr(m, "running_var", None)
            if isinstance(mean, torch.Tensor) and isinstance(var, torch.Tensor):
                mean.copy_(torch.randn(mean.shape, generator=g) * 0.1)
                var.copy_(torch.rand(var.shape, generator=g) + 0.5)


def key_diff(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> KeyDiff:
    """Keys only in the reference, keys only in ours, and keys whose shapes differ."""
    missing = tuple((k, tuple(v.shape)) for k, v in theirs.items() if k not in ours)
    extra = tuple((k, tuple(v.shape)) for k, v in ours.items() if k not in theirs)
    mismatched = tuple((k, tuple(v.shape), tuple(theirs[k].shape)) for k, v in ours.items()
                       if k in theirs and tuple(v.shape) != tuple(theirs[k].shape))
    return KeyDiff(len(ours), len(theirs), missing, extra, mismatched)


def _flat(out: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A model's output as a list: one logits tensor, or the feature maps a `features:` spec returns."""
    return [out] if isinstance(out, torch.Tensor) else list(out)


def max_differences(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[float, float]:
    """max|a - b| and that over max|b|, NaN when any output is NaN (Python's max() would drop a NaN)."""
    diffs = torch.stack([(p.double() - q.double()).abs().max() for p, q in zip(a, b, strict=True)]).max().item()
    scale = torch.stack([q.double().abs().max() for q in b]).max().item()
    return diffs, (diffs / scale if scale > 0 else diffs)


def _run_traced(model: nn.Module, x: torch.Tensor, names: set[str]) -> dict[str, torch.Tensor]:
    """The outputs of the named modules during model(x), in the order they finished."""
    seen: dict[str, torch.Tensor] = {}
    hooks: list[RemovableHandle] = []
    for name, m in model.named_modules():
        if name in names:
            def keep(mod: nn.Module, inp: tuple[object, ...], out: object, name: str = name) -> None:
                if isinstance(out, torch.Tensor):
                    seen[name] = out.detach().clone()  # a later in-place ReLU would change it
            hooks.append(m.register_forward_hook(keep))
    try:
        with torch.no_grad():
            model(x)
        return seen
    finally:
        for h in hooks:
            h.remove()


def output_diff(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> OutputDiff:
    """Run both models (already on x's device and dtype, in eval mode) on x and measure the difference;
    when they differ, name the first top-level module or block whose output differs."""
    with torch.no_grad():
        a, b = _flat(ours(x)), _flat(theirs(x))
    tol = TOLERANCE.get(x.dtype, 1e-5)
    shapes_match = len(a) == len(b) and all(p.shape == q.shape for p, q in zip(a, b, strict=True))
    max_abs, rel = max_differences(a, b) if shapes_match else (math.nan, math.nan)
    first = None if shapes_match and rel <= tol else _first_difference(ours, theirs, x, tol)
    return OutputDiff(str(x.dtype).removeprefix("torch."), str(x.device), tuple(x.shape), max_abs, rel, tol,
                      shapes_match, first)


def _first_difference(ours: nn.Module, theirs: nn.Module, x: torch.Tensor, tol: float) -> tuple[str, float] | None:
    """Run both again, keeping the outputs of the top-level modules and blocks (layer1.0) both have,
    and return the first, in the order they finish, whose outputs differ."""
    names = {n for n, _ in ours.named_modules() if n and n.count(".") <= 1} & {n for n, _ in theirs.named_modules()}
    seen_a, seen_b = _run_traced(ours, x, names), _run_traced(theirs, x, names)
    for name, t in seen_a.items():
        if name in seen_b:
            r = max_differences([t], [seen_b[name]])[1] if t.shape == seen_b[name].shape else math.nan
            if not r <= tol:
                return name, r
    return None


def compare_to_model(spec: ResNetSpec, theirs: nn.Module, input_size: int, batch: int, device: torch.device,
                     dtype: torch.dtype, seed: int) -> tuple[KeyDiff, OutputDiff | None]:
    """Key diff of the spec's model (on the meta device) with `theirs`; if the keys match, build the spec's
    model around the reference's tensors (a strict load, no copy, no random init) and compare outputs."""
    from ..model.build import meta_model
    from ..model.factory import build_model
    keys = key_diff(meta_model(spec).state_dict(), theirs.state_dict())
    if not keys.same:
        return keys, None
    try:
        ours = build_model(spec, init="none", weights=theirs.state_dict())
    except RuntimeError as e:  # load_state_dict's own refusal, as one line
        raise InputError(str(e).strip().splitlines()[0]) from None
    ours.to(device=device, dtype=dtype).eval()
    theirs.to(device=device, dtype=dtype).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, spec.in_channels, input_size, input_size, generator=g, dtype=dtype).to(device)
    return keys, output_diff(ours, theirs, x)


MAX_ROWS = 40  # rows of a key table shown as text


def _shape(s: tuple[int, ...] | None) -> str:
    return "-" if s is None else "x".join(map(str, s)) or "scalar"


def key_table(keys: KeyDiff, theirs: str = "reference", max_rows: int | None = MAX_ROWS) -> list[str]:
    """The key diff as table lines: shape mismatches first, then missing and extra keys."""
    rows = ([("shape", k, a, b) for k, a, b in keys.mismatched] + [("missing", k, None, s) for k, s in keys.missing]
            + [("extra", k, s, None) for k, s in keys.extra])
    if not rows:
        return []
    shown = rows if max_rows is None else rows[:max_rows]
    width = max(len(k) for _, k, _, _ in shown)
    lines = [f"  {'':<8} {'key':<{width}}  {'spec':>16}  {theirs:>16}"]
    lines += [f"  {kind:<8} {k:<{width}}  {_shape(a):>16}  {_shape(b):>16}" for kind, k, a, b in shown]
    if len(rows) > len(shown):
        lines.append(f"  ... and {len(rows) - len(shown)} more")
    return lines
