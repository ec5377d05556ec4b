"""What a spec costs, per stage: output shape, parameters, MACs and activation memory.

Runs the model on the `meta` device, so nothing is allocated however large the spec.
MACs are multiply-accumulates of convolutions and linear layers (the convention behind
torchvision's published GFLOPS), counted by torch.utils.flop_counter.FlopCounterMode
(which reports 2 FLOPs per MAC).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..spec.types import ResNetSpec
from .build import meta_model  # meta_model is also the analysis's public entry for a meta model


@dataclass(frozen=True)
class Row:
    """Cost of one part of the network (stem, a stage, a block, or the head)."""

    name: str
    shape: tuple[int, ...]
    params: int
    macs: int
    activation_bytes: int


def _blocks(model: nn.Module, stage: str) -> list[str]:
    """The names of a stage's blocks: layerN.M, or stages.N.blocks.M in a pre-activation net."""
    name = f"{stage}.blocks" if hasattr(model.get_submodule(stage), "blocks") else stage
    return [f"{name}.{b}" for b, _ in model.get_submodule(name).named_children()]


def _groups(model: nn.Module, verbose: bool) -> dict[str, list[str]]:
    """Row name -> the module names it covers: what comes before the stages is the stem, after them the head."""
    stages = cast(list[str], model.stage_names)
    groups: dict[str, list[str]] = {}
    part = "stem"
    for name, _ in model.named_children():
        inner = [s for s in stages if s == name or s.startswith(f"{name}.")]  # layerN, or stages holding stages.N
        if inner:
            part = "head"
            for stage in inner:
                groups.update({b: [b] for b in (_blocks(model, stage) if verbose else [stage])})
        else:
            groups.setdefault(part, []).append(name)
    return groups


def analyse(spec: ResNetSpec, input_size: int | None = None, batch: int = 1,
            verbose: bool = False) -> list[Row]:
    """One Row per stem, stage (or block, if verbose) and head, in forward order."""
    model = meta_model(spec).eval()
    size = input_size or spec.input_size
    groups = _groups(model, verbose)
    shapes: dict[str, tuple[int, ...]] = {}
    acts: dict[str, int] = {}
    hooks = []
    for group, names in groups.items():
        for name in names:
            mod = model.get_submodule(name)

            def last_shape(m: nn.Module, inp: Any, out: Any, group: str = group) -> None:
                if isinstance(out, torch.Tensor):
                    shapes[group] = tuple(out.shape)
            hooks.append(mod.register_forward_hook(last_shape))
            for leaf in mod.modules():
                if next(leaf.children(), None) is None:
                    def act(m: nn.Module, inp: Any, out: Any, group: str = group) -> None:
                        if isinstance(out, torch.Tensor):
                            acts[group] = acts.get(group, 0) + out.numel() * out.element_size()
                    hooks.append(leaf.register_forward_hook(act))
    x = torch.empty(batch, spec.in_channels, size, size, device="meta")
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    # Keys are module paths under the root's class name: "ResNet.layer1.0" -> "layer1.0".
    flops = {k.partition(".")[2]: sum(v.values()) for k, v in counter.get_flop_counts().items() if "." in k}
    rows = []
    for group, names in groups.items():
        params = sum(p.numel() for n in names for p in model.get_submodule(n).parameters())
        macs = sum(flops.get(n, 0) for n in names) // 2
        if group in shapes:  # a module that never ran (an unused Identity) gets no row
            rows.append(Row(group, shapes[group], params, macs, acts.get(group, 0)))
    if rows and rows[-1].name == "head" and isinstance(out, torch.Tensor):
        # The head ends in a flatten (a function, not a module): without a classifier (num_classes 0) the
        # pool's (N, C, 1, 1) is what the hooks saw, while forward returns (N, C).
        rows[-1] = Row("head", tuple(out.shape), rows[-1].params, rows[-1].macs, rows[-1].activation_bytes)
    return rows


def totals(rows: list[Row]) -> Row:
    """The sum of all rows; its shape is the network's output shape."""
    return Row("total", rows[-1].shape if rows else (), sum(r.params for r in rows), sum(r.macs for r in rows),
               sum(r.activation_bytes for r in rows))
