"""Inference-only rewrites of a built model: each BatchNorm folded into its conv, channels_last, optional compile;
the CPU features each precision needs, and the output check every engine passes before it is returned."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..errors import InputError
from .layers import BatchNormAct2d

PRECISIONS = ("fp32", "bf16", "int8")
# The /proc/cpuinfo flags that make a precision fast on a CPU, and the names a user knows them by.
# Without one, oneDNN and the runtimes emulate it in fp32 arithmetic: slower than fp32 itself.
PRECISION_FEATURES: dict[str, tuple[tuple[str, str], ...]] = {
    "fp32": (),
    "bf16": (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512-BF16")),
    "int8": (("amx_int8", "AMX"), ("avx512_vnni", "AVX-512-VNNI"), ("avx_vnni", "AVX-VNNI")),
}
# Largest max |out - ref| / max |ref| against eager fp32 that an engine's output may have at each precision.
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "int8": 0.25}


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_support(precision: str, flags: Iterable[str] | None = None) -> str | None:
    """None if the CPU runs `precision` fast, else a sentence naming the features it lacks."""
    if precision not in PRECISION_FEATURES:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}", setting="precision")
    have = cpu_flags() if flags is None else frozenset(flags)
    needs = PRECISION_FEATURES[precision]
    if not needs or any(flag in have for flag, _ in needs):
        return None
    names = " or ".join(dict.fromkeys(name for _, name in needs))
    return f"precision {precision} needs a CPU with {names}, and this CPU has none of them"


def require_precision(precision: str, device: torch.device | str = "cpu") -> None:
    """Raise InputError(setting="precision") when `device` cannot run `precision` fast."""
    if torch.device(device).type != "cpu":
        if precision == "int8":
            raise InputError("precision int8 runs on the CPU only", setting="precision")
        return
    why = cpu_support(precision)
    if why is not None:
        raise InputError(f"{why}; use precision fp32", setting="precision")


@dataclass(frozen=True)
class OutputCheck:
    """How an optimized model's logits compare with the eager fp32 model's on one fixed random batch."""

    precision: str
    max_abs: float
    max_rel: float  # max |out - ref| / max |ref|
    top1_agreement: float  # fraction of images whose argmax is the same
    tolerance: float  # the max_rel allowed

    @property
    def passed(self) -> bool:
        return self.max_rel <= self.tolerance

    def __str__(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (f"max abs diff {self.max_abs:.2g}, max rel diff {self.max_rel:.2g} (allowed {self.tolerance:g}), "
                f"top-1 agreement {100 * self.top1_agreement:.0f}%: {verdict}")


def compare_outputs(out: torch.Tensor, ref: torch.Tensor, precision: str) -> OutputCheck:
    """The OutputCheck of logits `out` against the eager fp32 logits `ref`."""
    out, ref = out.detach().float().flatten(1), ref.detach().float().flatten(1)
    diff = (out - ref).abs().max().item()
    scale = max(ref.abs().max().item(), 1e-12)
    agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    return OutputCheck(precision, diff, diff / scale, agree, TOLERANCE[precision])


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """The (conv, batchnorm) module names where the BatchNorm2d reads a Conv2d's output and nothing else does.

    Found on the traced graph, not by attribute names, so a pair is folded only where the data flow
    really is conv -> bn (an anti-alias pool or an attention module in between rules it out).
    """
    graph = _NormActLeaves().trace(model)
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or type(modules[node.target]) not in (nn.BatchNorm2d, BatchNormAct2d):
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module" and type(modules[src.target]) is nn.Conv2d):
            continue
        # A module called twice, or a conv whose output also feeds the skip path, cannot be folded.
        conv, bn = str(src.target), str(node.target)  # a call_module node's target is the module's name
        if len(src.users) == 1 and calls[conv] == 1 and calls[bn] == 1:
            pairs.append((conv, bn))
    return pairs


class _NormActLeaves(fx.Tracer):
    """Traces a pre-activation net's BatchNormAct2d as one call, so that it folds like a BatchNorm2d."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, BatchNormAct2d) or super().is_leaf_module(m, module_qualified_name)


def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of `conv` with `bn`'s eval-mode affine transform baked into its weight and bias."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a BatchNorm without running statistics cannot be folded")
    # Folded in float64 and rounded once, so the folded model stays as close to eager as fp32 allows.
    w, b = fuse_conv_bn_weights(
        conv.weight.double(), None if conv.bias is None else conv.bias.double(),
        bn.running_mean.double(), bn.running_var.double(), bn.eps,
        None if bn.weight is None else bn.weight.double(), None if bn.bias is None else bn.bias.double())
    pad = conv.padding if isinstance(conv.padding, str) else _pair(conv.padding)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, _pair(conv.kernel_size), stride=_pair(conv.stride),
                      padding=pad, dilation=_pair(conv.dilation), groups=conv.groups, bias=True,
                      padding_mode=conv.padding_mode, device="meta")
    fused.weight = nn.Parameter(w.detach().to(conv.weight.dtype), requires_grad=False)
    fused.bias = nn.Parameter(b.detach().to(conv.weight.dtype), requires_grad=False)
    return fused


def fold_batchnorms(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every BatchNorm2d that directly follows a Conv2d into it, in place; return the pairs folded.

    The BatchNorm becomes nn.Identity (a BatchNormAct2d its activation), so module names and the model's class are
    kept. Only valid
    for inference: the folded conv applies the running statistics, as BatchNorm does in eval mode.
    """
    pairs = conv_bn_pairs(model)
    modules = dict(model.named_modules())
    for conv_name, bn_name in pairs:
        model.set_submodule(conv_name, _folded_conv(modules[conv_name], modules[bn_name]))
        bn = modules[bn_name]
        model.set_submodule(bn_name, bn.act if isinstance(bn, BatchNormAct2d) else nn.Identity())
    return pairs


def optimize_for_inference(model: nn.Module, compile: bool = False, *, precision: str = "fp32",
                           engine: str | None = None, calibration: Iterable[torch.Tensor] | None = None,
                           check_batch: torch.Tensor | None = None) -> nn.Module:
    """Eval mode, no gradients, BatchNorms folded, weights in channels_last; `compile` adds torch.compile.

    Inputs may stay in the default (NCHW) layout: a conv whose weight is channels_last writes a
    channels_last output, and the rest of the network follows it. Outputs equal the eager model's
    to within float rounding (the fold changes the order of the multiply-adds).

    With an `engine` (eager, inductor, onnxruntime, openvino or auto) or a `precision` other than fp32, the
    folded model is handed to that engine (engines.accelerate; engine None means auto there), checked against
    the eager fp32 model on `check_batch`, and returned as an engines.InferenceModel whose `.check` holds the
    result; an engine whose output is off by more than the precision allows raises OutputMismatch.
    """
    if any(p.is_meta for p in model.parameters()):
        raise ValueError("cannot optimize a model without weights (it is on the meta device); load them first")
    if engine is not None or precision != "fp32":
        if compile:
            raise InputError("compile is the fp32 torch.compile path; with a precision or an engine, "
                             "use engine inductor", setting="compile")
        from .engines import accelerate
        return accelerate(model, precision=precision, engine=engine or "auto", calibration=calibration,
                          check_batch=check_batch)
    model.eval().requires_grad_(False)
    fold_batchnorms(model)
    model.to(memory_format=torch.channels_last)
    if compile:
        return cast(nn.Module, torch.compile(model))  # an OptimizedModule
    return model


def _pair(t: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d's size tuple as the (height, width) pair its constructor is typed to take."""
    return t[0], t[1]
