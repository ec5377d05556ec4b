"""Export a built model to a deployment format, write it atomically, and check it by loading it back.

Each export is serialised to bytes and those bytes are loaded back and checked before anything is
written: state_dict and safetensors tensor by tensor (they must be equal), TorchScript and ONNX by
running them against the torch model on a batch size other than the one traced, so a batch axis
fixed by accident is caught. Only checked bytes are written (atomically), and the file is then read
back and compared byte for byte. A failed check leaves the target as it was.

EXPORTERS is the one table of formats. torch is imported when an exporter runs, not with this module,
so the CLI takes its --format choices from the table without importing torch.
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import InputError, OutputError
from ..fileio import atomic_write
from ..registry import lookup
from ..spec.types import ResNetSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

EXPORT_HINT = 'pip install "resnet-spec[export]"'
# max|exported - torch| / max|torch| allowed. TorchScript runs the same kernels; ONNX Runtime sums in
# another order (and fuses conv + BN), which costs float32 a few ulps per layer.
TOLERANCE = {"torchscript": 1e-5, "pt2": 1e-5, "onnx": 1e-4}
# Half-precision exports are compared with the torch model in that same dtype: float16 keeps 11 bits, bfloat16 8.
DTYPE_TOLERANCE = {"float32": 0.0, "float16": 1e-2, "bfloat16": 5e-2}
DTYPES = tuple(DTYPE_TOLERANCE)
# The formats that carry a dtype; onnxruntime's CPU kernels are float32.
DTYPE_FORMATS = ("torchscript", "pt2", "safetensors", "state_dict")
# What a file name says about its format; a folder (no suffix) is a Hugging Face model.
SUFFIXES = {".onnx": "onnx", ".pt2": "pt2", ".ts": "torchscript", ".torchscript": "torchscript",
            ".safetensors": "safetensors", ".pt": "state_dict", ".pth": "state_dict"}
OPSET = 17


@dataclass(frozen=True)
class ExportCheck:
    """What was written and how the file read back compared with the torch model."""

    format: str
    path: Path
    check: str            # what was compared, in words
    max_abs: float
    max_rel: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_rel <= self.tolerance


@dataclass(frozen=True)
class ExportOptions:
    """How to export: the check's input size and seed, fixed or dynamic shapes, and the weights' dtype."""

    size: int
    seed: int = 0
    static_shape: bool = False   # ONNX: fix height and width to `size` (the batch axis stays dynamic)
    dtype: str = "float32"       # float32, float16 or bfloat16, for the formats in DTYPE_FORMATS


class Exporter(Protocol):
    """Writes `model` to `path` in one format once the bytes read back pass their check."""

    def __call__(self, model: nn.Module, spec: ResNetSpec, path: Path, opts: ExportOptions) -> ExportCheck: ...


def _flat(out: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A model's output as a list: one logits tensor, or the feature maps a `features:` spec returns."""
    import torch
    return [out] if isinstance(out, torch.Tensor) else list(out)


def _diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[float, float]:
    from .compare import max_differences
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        raise InputError("export check failed: the file read back gives outputs of other shapes")
    return max_differences(a, b)


def _tensors_equal(saved: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor]) -> tuple[float, float]:
    import torch
    if saved.keys() != loaded.keys():
        raise InputError("export check failed: the file read back has other keys")
    bad = [k for k in saved if saved[k].dtype != loaded[k].dtype or not torch.equal(saved[k], loaded[k])]
    if bad:
        raise InputError(f"export check failed: tensor {bad[0]} differs after reading the file back")
    return 0.0, 0.0


def _inputs(spec: ResNetSpec, size: int, seed: int,
            dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    import torch
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, spec.in_channels, size, size, generator=g, dtype=dtype),
            torch.randn(3, spec.in_channels, size, size, generator=g, dtype=dtype))


def _dtype(opts: ExportOptions) -> torch.dtype:
    import torch
    dtype: torch.dtype = getattr(torch, opts.dtype)
    return dtype


def _tolerance(fmt: str, opts: ExportOptions) -> float:
    """The format's own tolerance, widened to the dtype's rounding for a half-precision export."""
    return TOLERANCE[fmt] if opts.dtype == "float32" else max(TOLERANCE[fmt], DTYPE_TOLERANCE[opts.dtype])


def _weights(model: nn.Module, opts: ExportOptions) -> dict[str, torch.Tensor]:
    """The state_dict on the CPU, floating tensors in the export's dtype (integer buffers as they are)."""
    dtype = _dtype(opts)
    return {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
            for k, v in model.state_dict().items()}


def _onnx_axes(outputs: list[str], n_out: int, static: bool) -> dict[str, dict[int, str]]:
    spatial = {} if static else {2: "height", 3: "width"}
    axes = {"input": {0: "batch", **spatial}}
    for name in outputs:  # logits have only a batch axis; feature maps have the input's spatial axes too
        axes[name] = {0: "batch"} if n_out == 1 and name == "output" else {0: "batch", **spatial}
    return axes


def export_pt2(model: nn.Module, spec: ResNetSpec, path: Path, opts: ExportOptions) -> ExportCheck:
    """A torch.export program with a dynamic batch axis; loaded back with torch.export.load, run at batch 3."""
    import torch
    x2, x3 = _inputs(spec, opts.size, opts.seed, _dtype(opts))
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.export.export(model, (x2,), dynamic_shapes=({0: batch},))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    loaded = torch.export.load(io.BytesIO(buf.getvalue()))
    with torch.no_grad():
        got, want = _flat(loaded.module()(x3)), _flat(model(x3))
    check = ExportCheck("pt2", path, "torch.export at batch 2 (batch axis dynamic), loaded back, run at batch 3",
                        *_diff(got, want), _tolerance("pt2", opts))
    return _passed(check, path, buf.getvalue())


def _write(path: Path, blob: bytes) -> None:
    atomic_write(path, lambda f: f.write(blob))
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    if digest.digest() != hashlib.sha256(blob).digest():
        raise InputError(f"{path}: the file read back differs from the bytes written")


def export_state_dict(model: nn.Module, spec: ResNetSpec, path: Path, opts: ExportOptions) -> ExportCheck:
    """The state_dict through torch.save; read back with weights_only=True, every tensor equal."""
    import torch
    sd = _weights(model, opts)
    buf = io.BytesIO()
    torch.save(sd, buf)
    loaded = torch.load(io.BytesIO(buf.getvalue()), map_location="cpu", weights_only=True)
    check = ExportCheck("state_dict", path, "every tensor read back with torch.load(weights_only=True) and equal",
                        *_tensors_equal(sd, loaded), 0.0)
    _write(path, buf.getvalue())
    return check


def export_safetensors(model: nn.Module, spec: ResNetSpec, path: Path, opts: ExportOptions) -> ExportCheck:
    """The state_dict as safetensors, the spec in its metadata; read back, every tensor equal."""
    try:
        from safetensors.torch import load, save
    except ImportError:
        raise InputError(f"safetensors export needs the safetensors package: {EXPORT_HINT}") from None
    sd = _weights(model, opts)
    meta = {"format": "resnet-spec/1", "name": spec.name, "spec": json.dumps(spec.data)}
    blob = save(sd, metadata=meta)
    check = ExportCheck("safetensors", path, "every tensor read back with safetensors and equal",
                        *_tensors_equal(sd, load(blob)), 0.0)
    _write(path, blob)
    return check


def export_torchscript(model: nn.Module, spec: ResNetSpec, path: Path, opts: ExportOptions) -> ExportCheck:
    """Traced at batch 2, loaded back and run at batch 3 against the torch model."""
    import torch
    x2, x3 = _inputs(spec, opts.size, opts.seed, _dtype(opts))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, and says so each call
        traced = torch.jit.trace(model, x2)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(io.BytesIO(buf.getvalue()), map_location="cpu")
        got = _flat(loaded(x3))
        want = _flat(model(x3))
    check = ExportCheck("torchscript", path, "traced at batch 2, loaded back, run at batch 3 against the torch model",
                        *_diff(got, want), _tolerance("torchscript", opts))
    return _passed(check, path, buf.getvalue())


def export_onnx(model: nn.Module, spec: ResNetSpec, path: Path, opts: ExportOptions) -> ExportCheck:
    """ONNX with a dynamic batch axis; run by onnxruntime at batch 2 and 3 against the torch model."""
    import torch
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise InputError(f"onnx export needs onnx and onnxruntime: {EXPORT_HINT}") from None
    x2, _ = _inputs(spec, opts.size, opts.seed)
    # The second check runs at batch 3 and, unless the shape is static, at twice the size: a fixed axis fails it.
    x3 = _inputs(spec, opts.size if opts.static_shape else 2 * opts.size, opts.seed + 1)[1]
    with torch.no_grad():
        n_out = len(_flat(model(x2)))
    outputs = ["output"] if n_out == 1 else [f"feature{i}" for i in range(n_out)]
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: the dynamo one needs onnxscript, which the extra does not pull in.
        # It writes to a file object as well as to a path; torch's type hint names paths only.
        torch.onnx.export(model, (x2,), buf, dynamo=False,  # type: ignore[arg-type]
                          opset_version=OPSET, input_names=["input"],
                          output_names=outputs, dynamic_axes=_onnx_axes(outputs, n_out, opts.static_shape))
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    fixed = [name for i, name in ((0, "batch"), (2, "height"), (3, "width"))
             if not dims[i].dim_param and (i == 0 or not opts.static_shape)]
    if fixed:
        raise InputError(f"export check failed: the ONNX input's {' and '.join(fixed)} axes are not dynamic")
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    worst = (0.0, 0.0)
    for x in (x2, x3):
        got = [torch.from_numpy(a) for a in session.run(None, {"input": x.numpy()})]
        with torch.no_grad():
            d = _diff(got, _flat(model(x)))
            worst = d if not d[1] <= worst[1] else worst  # a NaN is the worst
    shapes = (f"batch dynamic, {opts.size}x{opts.size} fixed" if opts.static_shape
              else f"batch, height and width dynamic; run at {opts.size} and {2 * opts.size} px")
    check = ExportCheck("onnx", path, f"opset {OPSET}, {shapes}; onnxruntime vs torch at batch 2 and 3",
                        *worst, TOLERANCE["onnx"])
    return _passed(check, path, buf.getvalue())


def _passed(check: ExportCheck, path: Path, blob: bytes) -> ExportCheck:
    if not check.passed:
        raise InputError(f"export check failed: max rel diff {check.max_rel:.3g} is above the tolerance "
                           f"{check.tolerance:g}; {path} not written")
    _write(path, blob)
    return check


from .export_hf import export_hf  # noqa: E402 - it uses this module's helpers, imported after them

# Format name -> exporter, in the order `--help` lists them.
EXPORTERS: dict[str, Exporter] = {
    "torchscript": export_torchscript,
    "pt2": export_pt2,
    "onnx": export_onnx,
    "safetensors": export_safetensors,
    "state_dict": export_state_dict,
    "hf": export_hf,
}
FORMATS = tuple(EXPORTERS)


def format_for(path: str | Path) -> str | None:
    """The format a file name asks for (by its suffix; a name without one is a Hugging Face folder), or None."""
    suffix = Path(path).suffix.lower()
    return SUFFIXES.get(suffix) if suffix else "hf"


def check_format(fmt: str, path: str | Path, dtype: str = "float32") -> None:
    """InputError when the file name asks for another format, or the format cannot carry the dtype."""
    named = format_for(path)
    if named is not None and named != fmt:
        raise InputError(f"{path}: the name says {named} but the format asked for is {fmt}; "
                         "rename the file or change the format", setting="format")
    if dtype != "float32" and fmt not in DTYPE_FORMATS:
        raise InputError(f"dtype {dtype}: {fmt} is exported in float32 only; "
                         f"{', '.join(DTYPE_FORMATS)} carry {dtype}", setting="dtype")


def export(model: nn.Module, spec: ResNetSpec, fmt: str, path: str | Path, size: int, seed: int = 0, *,
           static_shape: bool = False, dtype: str = "float32") -> ExportCheck:
    """Serialise `model` (in eval mode, on the CPU) as `fmt`, check the bytes loaded back, write them atomically.

    `fmt` is a name in EXPORTERS and `dtype` in DTYPES; ValueError for any other.
    """
    exporter = lookup(EXPORTERS, "export format", fmt)
    lookup(DTYPE_TOLERANCE, "dtype", dtype)
    check_format(fmt, path, dtype)
    path = Path(path)
    model = model.cpu().eval()
    if dtype != "float32":
        import copy
        model = copy.deepcopy(model).to(_dtype(ExportOptions(size, seed, dtype=dtype)))
    try:
        return exporter(model, spec, path, ExportOptions(size, seed, static_shape, dtype))
    except (InputError, OutputError):
        raise
    except Exception as e:  # the exporter's own failure (a graph it cannot trace, ONNX's 2 GB protobuf limit)
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise InputError(f"{fmt} export failed, {path} not written: {type(e).__name__}: {first}") from None
