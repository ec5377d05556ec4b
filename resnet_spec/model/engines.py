"""Inference engines behind one callable: eager oneDNN, inductor with freezing, onnxruntime, OpenVINO, at fp32,
bf16 or int8. Every engine is checked against the eager fp32 model on a fixed random batch before it is returned."""
from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import io
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .optimize import PRECISIONS, OutputCheck, compare_outputs, fold_batchnorms, require_precision

Runner = Callable[[torch.Tensor], torch.Tensor]
# Each engine makes a runner from the folded fp32 model, the precision, an example batch and calibration batches.
EngineBuild = Callable[[nn.Module, str, torch.Tensor, "list[torch.Tensor]"], Runner]
OPSET = 17


class OutputMismatch(InputError):
    """An engine whose output differs from the eager fp32 model's by more than its precision allows."""

    def __init__(self, message: str, check: OutputCheck) -> None:
        super().__init__(message, setting="engine")
        self.check = check


class InferenceModel(nn.Module):
    """A model run by an inference engine, with the start-up time and the output check it passed."""

    def __init__(self, runner: Runner, engine: str, precision: str, startup_s: float, check: OutputCheck,
                 module: nn.Module | None = None) -> None:
        super().__init__()
        self.runner, self.engine, self.precision = runner, engine, precision
        self.startup_s, self.check = startup_s, check
        self.module = module  # the torch module it runs, if any: kept so that .to() and state_dict still see it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.runner(x)


def _torch_model(model: nn.Module, precision: str) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """The model at `precision` (weights cast to bf16 once, rather than autocast on every call) and its input cast."""
    device = next(model.parameters()).device
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    m = model if precision == "fp32" else copy.deepcopy(model).to(dtype)
    return m, lambda x: x.to(device, dtype, memory_format=torch.channels_last)


def _eager(model: nn.Module, precision: str, example: torch.Tensor, calib: list[torch.Tensor]) -> Runner:
    m, cast = _torch_model(model, precision)
    return lambda x: m(cast(x)).float()


def _inductor(model: nn.Module, precision: str, example: torch.Tensor, calib: list[torch.Tensor]) -> Runner:
    import torch._inductor.config as inductor_config
    m, cast = _torch_model(model, precision)
    compiled = torch.compile(m)

    def run(x: torch.Tensor) -> torch.Tensor:
        # Freezing folds the weights into the graph as constants (and lets oneDNN prepack them); it is read
        # when a graph is compiled, which happens on the first call of each new input shape.
        with inductor_config.patch(freezing=True), torch.inference_mode():
            return compiled(cast(x)).float()  # type: ignore[no-any-return]
    run(example)
    return run


def _onnx_file(model: nn.Module, example: torch.Tensor, folder: Path) -> Path:
    """The folded model exported to ONNX with a dynamic batch axis, written into `folder`."""
    buf = io.BytesIO()
    # The TorchScript-based exporter, as tools/export.py uses: the dynamo one needs onnxscript.
    torch.onnx.export(model, (example.contiguous(),), buf, dynamo=False, opset_version=OPSET,  # type: ignore[arg-type]
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    path = folder / "model.onnx"
    path.write_bytes(buf.getvalue())
    return path


def _onnxruntime(model: nn.Module, precision: str, example: torch.Tensor, calib: list[torch.Tensor]) -> Runner:
    ort = _optional("onnxruntime")
    with tempfile.TemporaryDirectory() as tmp:
        path = _onnx_file(model, example, Path(tmp))
        if precision == "int8":
            path = _quantize_onnx(path, calib)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle workers sleep rather than spin: torch shares these cores in the same process.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"input": x.float().contiguous().numpy()})[0])
    return run


def _quantize_onnx(path: Path, calib: list[torch.Tensor]) -> Path:
    """Static int8 quantization (QDQ, per-channel weights), activation ranges from the calibration batches."""
    q = _optional("onnxruntime.quantization")
    # One batch of every image: the histograms are the same as batch by batch, and the percentile calibrator
    # cannot stack batches of different sizes (a folder whose image count is not a multiple of the batch).
    batches = iter([{"input": torch.cat([b.float() for b in calib]).contiguous().numpy()}])

    class Reader:  # what quantize_static reads the batches through (a CalibrationDataReader, by duck typing)
        def get_next(self) -> dict[str, Any] | None:
            return next(batches, None)

    out = path.with_name("int8.onnx")
    with contextlib.redirect_stdout(io.StringIO()):  # the percentile calibrator prints its settings
        q.quantize_static(str(path), str(out), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          # Percentile over MinMax: on digits MinMax lost 0.27 points of top-1, Percentile none;
                          # it costs start-up time (histograms of every activation).
                          calibrate_method=q.CalibrationMethod.Percentile,
                          extra_options={"CalibPercentile": 99.99})
    return out


def _openvino(model: nn.Module, precision: str, example: torch.Tensor, calib: list[torch.Tensor]) -> Runner:
    ov = _optional("openvino")
    with tempfile.TemporaryDirectory() as tmp:
        core = ov.Core()
        graph = core.read_model(str(_onnx_file(model, example, Path(tmp))))
        compiled = core.compile_model(graph, "CPU", {
            "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
            "INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        request.infer({0: x.float().contiguous().numpy()})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())
    return run


@dataclass(frozen=True)
class Engine:
    """One way to run a model: what builds it, the precisions it runs, the package it needs (None: torch)."""

    build: EngineBuild
    precisions: tuple[str, ...]
    package: str | None = None
    cpu_only: bool = False

    def missing(self) -> str | None:
        """The package this engine needs and cannot find, or None."""
        if self.package is None or importlib.util.find_spec(self.package) is not None:
            return None
        return self.package


ENGINES: dict[str, Engine] = {
    "eager": Engine(_eager, ("fp32", "bf16")),
    "inductor": Engine(_inductor, ("fp32", "bf16")),
    "onnxruntime": Engine(_onnxruntime, ("fp32", "int8"), "onnxruntime", cpu_only=True),
    "openvino": Engine(_openvino, ("fp32", "bf16"), "openvino", cpu_only=True),
}
# "auto": the fastest engine at each precision as measured by benchmarks/bench.py on the development machine
# (AMD EPYC, AVX-512-BF16, no AMX; see docs/performance.md), among those installed, in order.
AUTO: dict[str, tuple[str, ...]] = {
    "fp32": ("onnxruntime", "openvino", "inductor", "eager"),
    "bf16": ("openvino", "inductor", "eager"),
    "int8": ("onnxruntime",),
}


def available(precision: str, device: torch.device | str = "cpu") -> list[str]:
    """The engines installed here that run `precision` on `device`, in the order AUTO prefers them."""
    order = AUTO[precision] + tuple(n for n in ENGINES if n not in AUTO[precision])
    on_cpu = torch.device(device).type == "cpu"
    return [n for n in order if precision in ENGINES[n].precisions and ENGINES[n].missing() is None
            and (on_cpu or not ENGINES[n].cpu_only)]


def accelerate(model: nn.Module, *, precision: str = "fp32", engine: str = "auto",
               calibration: Iterable[torch.Tensor] | None = None, check_batch: torch.Tensor | None = None,
               strict: bool = True) -> InferenceModel:
    """`model` (in place: eval mode, BatchNorms folded) run by `engine` at `precision`, checked against eager fp32.

    `calibration` gives the int8 activation ranges: batches of preprocessed images, NCHW float.
    `check_batch` is the fixed input of the output check (default: 2 seeded random images at the spec's
    input size). With `strict`, an engine whose output is off by more than the precision allows raises
    OutputMismatch; otherwise the check is only recorded on the result.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}", setting="precision")
    if any(p.is_meta for p in model.parameters()):
        raise InputError("cannot optimize a model without weights (it is on the meta device); load them first",
                         setting="weights")
    device = next(model.parameters()).device
    require_precision(precision, device)
    name = _choose(engine, precision, device)
    calib = [b.detach().float() for b in calibration] if calibration is not None else []
    if precision == "int8" and not calib:
        raise InputError("precision int8 needs calibration images", setting="calibration")
    x = (check_batch if check_batch is not None else _check_batch(model)).to(device)
    model.eval().requires_grad_(False)
    with torch.inference_mode():
        reference = model(x)
    if not isinstance(reference, torch.Tensor):  # a features-only spec returns one map per stage
        raise InputError("the inference engines run models with one output tensor; this one returns "
                         f"{type(reference).__name__}", setting="engine")
    fold_batchnorms(model)
    model.to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    with torch.inference_mode():
        runner = ENGINES[name].build(model, precision, x, calib)
        out = runner(x)
    startup = time.perf_counter() - t0
    check = compare_outputs(out, reference.float(), precision)
    if strict and not check.passed:
        raise OutputMismatch(f"engine {name} at {precision} differs from eager fp32: {check}", check)
    runs_model = name in ("eager", "inductor") and precision == "fp32"  # bf16 runs a copy, the runtimes their graph
    return InferenceModel(runner, name, precision, startup, check, model if runs_model else None)


def _choose(engine: str, precision: str, device: torch.device) -> str:
    if engine == "auto":
        names = available(precision, device)
        if not names:
            raise InputError(f"no installed engine runs precision {precision} on {device}", setting="precision")
        return names[0]
    if engine not in ENGINES:
        raise InputError(f"engine must be one of auto, {', '.join(ENGINES)}, got {engine!r}", setting="engine")
    if precision not in ENGINES[engine].precisions:
        raise InputError(f"engine {engine} does not run {precision}; it runs {', '.join(ENGINES[engine].precisions)}",
                         setting="engine")
    if ENGINES[engine].cpu_only and device.type != "cpu":
        raise InputError(f"engine {engine} runs on the CPU only; move the model to the CPU", setting="engine")
    missing = ENGINES[engine].missing()
    if missing is not None:
        raise InputError(f"engine {engine} needs the {missing} package (pip install 'resnet-spec[bench]')",
                         setting="engine")
    return engine


def _check_batch(model: nn.Module) -> torch.Tensor:
    """Two seeded random images at the model's input size and channels (its spec's, else 3x224x224)."""
    spec = getattr(model, "spec", None)
    size, channels = int(getattr(spec, "input_size", 224)), int(getattr(spec, "in_channels", 3))
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))


def _optional(name: str) -> Any:
    """An optional package, imported by name (typed Any: neither runtime ships complete stubs)."""
    return importlib.import_module(name)
