"""build_model: the public entry point from a spec (or its file or name) to a ready nn.Module."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..spec.load import load_spec
from ..spec.types import ResNetSpec, with_num_classes
from .build import meta_model, network
from .layers import BlurPool2d
from .limits import DEFAULT_LIMITS, Limits
from .limits import check as check_limits

_log = logging.getLogger("resnet_spec")
INITS = ("random", "none")
OPTIMIZATIONS = (None, "inference")
MAX_CLASSES = 100_000  # the schema's maximum for head.num_classes


def build_model(spec_or_path: ResNetSpec | str | Path, num_classes: int | None = None, *, init: str | None = None,
                weights: Mapping[str, Any] | str | Path | None = None, optimize: str | None = None,
                compile: bool = False, limits: Limits | None = DEFAULT_LIMITS, precision: str = "fp32",
                engine: str | None = None, calibration: Iterable[torch.Tensor] | None = None) -> nn.Module:
    """Build the network a spec (or a spec file, or a shipped spec name) describes.

    num_classes replaces the head's class count; 0 builds no classifier, so the model returns pooled
    features (timm's num_classes=0). init="random" (the default without weights) draws torchvision's seeded
    init. init="none" (the default with weights) builds on the meta device and skips the init: `weights` is
    then loaded strictly and without a copy. `weights` is a state_dict, or anything
    resnet_spec.model.weights.read_weights takes (a .pt/.pth/.safetensors file, a checkpoint or run folder of
    this project, a Hugging Face folder, a state_dict under 'model'/'state_dict'/'model_state_dict' or with
    'module.'/'_orig_mod.' prefixes); what was unwrapped is logged. When num_classes is given and only the
    classifier's size differs from the weights', the classifier is freshly initialised (timm's behaviour) and
    a warning is logged. Without weights and init="none", call `load_state_dict(sd, assign=True)` and then
    `materialize_buffers(model)` yourself.
    optimize="inference" folds each BatchNorm into its conv and uses channels_last (eval mode,
    no gradients); `compile=True` also wraps it in torch.compile. With it, `precision` ("bf16", "int8") or an
    `engine` ("eager", "inductor", "onnxruntime", "openvino", "auto") hands the folded model to
    resnet_spec.model.engines, which checks it against eager fp32 before returning it (its `.check`); int8 takes
    `calibration` batches. A precision the CPU cannot run fast is refused naming the missing feature.
    `limits` caps the blocks and the parameters before any weight is written (None: no check);
    the activation cap is left to the forward pass's caller, who knows the input size and batch.
    """
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or not 0 <= num_classes <= MAX_CLASSES):
        raise ValueError(f"num_classes must be an integer from 0 to {MAX_CLASSES}, got {num_classes!r}")
    if init is None:
        init = "none" if weights is not None else "random"
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if optimize not in OPTIMIZATIONS:
        raise ValueError(f"optimize must be one of {OPTIMIZATIONS}, got {optimize!r}")
    if compile and optimize is None:
        raise ValueError("compile=True needs optimize='inference'")
    if optimize is None and (precision != "fp32" or engine is not None or calibration is not None):
        raise ValueError("precision, engine and calibration need optimize='inference'")
    if weights is not None and init != "none":
        # A random init that the weights then overwrite is the cost init="none" exists to avoid.
        raise ValueError("weights= needs init='none' (the default when weights are given)")
    if init == "none" and weights is None and optimize is not None:
        raise ValueError("optimize needs real weights: pass weights= with init='none'")
    spec = spec_or_path if isinstance(spec_or_path, ResNetSpec) else load_spec(spec_or_path)
    if num_classes is not None:
        spec = with_num_classes(spec, num_classes)
    if limits is not None and spec.num_blocks > limits.max_blocks:  # first: build time grows with the blocks
        check_limits(spec, limits)
    if init == "random":
        model: nn.Module = network(spec) if limits is None else _capped_build(spec, limits)
    else:
        model = meta_model(spec)
        if limits is not None and sum(p.numel() for p in model.parameters()) > limits.max_params:
            check_limits(spec, limits)
        if weights is not None:
            state = _state_dict(weights)
            from .weights import classifier_rows
            if num_classes is not None and classifier_rows(state) not in (None, num_classes):
                return _with_new_head(spec, weights, optimize, compile, precision, engine, calibration)
            model.load_state_dict(state, strict=True, assign=True)
            materialize_buffers(model)
    if optimize == "inference":
        from .optimize import optimize_for_inference
        model = optimize_for_inference(model, compile=compile, precision=precision, engine=engine,
                                       calibration=calibration)
    return model


def _state_dict(weights: Mapping[str, Any] | str | Path) -> Mapping[str, torch.Tensor]:
    """A plain state_dict as it is (no copy); anything else through read_weights, which logs what it did."""
    if isinstance(weights, Mapping) and all(isinstance(v, torch.Tensor) for v in weights.values()) \
            and not any(k.startswith(("module.", "_orig_mod.")) for k in weights):
        return weights
    from .weights import read_weights
    read = read_weights(weights)
    for note in read.notes:
        _log.info("weights: %s", note)
    return read.state_dict


def _with_new_head(spec: ResNetSpec, weights: Mapping[str, Any] | str | Path, optimize: str | None, compile: bool,
                   precision: str, engine: str | None, calibration: Iterable[torch.Tensor] | None) -> nn.Module:
    """The model with every weight but the classifier's, which keeps a fresh (seeded) init: timm's head swap."""
    from .weights import fit_weights, read_weights
    model: nn.Module = network(spec)
    for note in fit_weights(model, read_weights(weights), reinit_head=True):
        _log.warning("weights: %s", note)
    if optimize == "inference":
        from .optimize import optimize_for_inference
        return optimize_for_inference(model, compile=compile, precision=precision, engine=engine,
                                      calibration=calibration)
    return model


class _OverCap(Exception):
    """Raised from the parameter-registration hook once a build passes limits.max_params."""


def _capped_build(spec: ResNetSpec, limits: Limits) -> nn.Module:
    """ResNet(spec), stopped by LimitError as soon as its parameters pass limits.max_params.

    The count runs during the real build, in a hook on each parameter's registration: a parameter
    is registered before its init writes to it, so an oversized model stops before its memory is
    touched. A separate meta-device build to count first would cost about a tenth of the build,
    and limits.check's traced analysis about 40%. Activation memory is the forward pass's concern:
    `resnet-spec build` checks it with the command's input size and batch.
    """
    from torch.nn.modules.module import register_module_parameter_registration_hook
    count = 0

    def hook(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        nonlocal count
        count += 0 if param is None else param.numel()
        if count > limits.max_params:
            raise _OverCap
    # The hook is global to nn.Module: a model built in another thread meanwhile would add to the count.
    handle = register_module_parameter_registration_hook(hook)
    try:
        return network(spec)
    except (_OverCap, RuntimeError) as e:  # RuntimeError: one tensor too large to allocate at all
        failed = e
    finally:
        handle.remove()
    check_limits(spec, limits)  # raises LimitError, worded from the meta-device analysis (hook removed first)
    raise failed


def materialize_buffers(model: nn.Module) -> nn.Module:
    """Recompute the fixed, non-persistent buffers a meta-device build leaves empty (a state_dict has none)."""
    device = next(model.parameters()).device
    for m in model.modules():
        if isinstance(m, BlurPool2d) and m.filt.is_meta:
            m.filt = BlurPool2d(m.channels, m.stride).filt.to(device)
    left = [name for name, t in model.named_buffers() if t.is_meta]
    if left:
        raise ValueError(f"buffers still on the meta device after loading weights: {', '.join(left)}")
    return model
