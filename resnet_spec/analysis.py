"""What a spec costs, per stage: output shape, parameters, MACs and activation memory.

Runs the model on the `meta` device, so nothing is allocated however large the spec.
MACs are multiply-accumulates of convolutions and linear layers (the convention behind
torchvision's published GFLOPS), counted by torch.utils.flop_counter.FlopCounterMode
(which reports 2 FLOPs per MAC).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .spec import ResNetSpec

_STEM = ("conv1", "bn1", "relu", "maxpool")
_HEAD = ("avgpool", "drop", "fc")


@dataclass(frozen=True)
class Row:
    """Cost of one part of the network (stem, a stage, a block, or the head)."""

    name: str
    shape: tuple[int, ...]
    params: int
    macs: int
    activation_bytes: int


def meta_model(spec: ResNetSpec) -> nn.Module:
    """The spec's model with every tensor on the meta device: shapes only, no memory, no RNG."""
    from .build import ResNet
    with torch.device("meta"):
        return ResNet(spec)


def _group_of(name: str, verbose: bool) -> str:
    top = name.split(".")[0]
    if top in _STEM:
        return "stem"
    if top in _HEAD:
        return "head"
    parts = name.split(".")
    return f"{parts[0]}.{parts[1]}" if verbose and len(parts) > 1 else top


def analyse(spec: ResNetSpec, input_size: int | None = None, batch: int = 1,
            verbose: bool = False) -> list[Row]:
    """One Row per stem, stage (or block, if verbose) and head, in forward order."""
    model = meta_model(spec).eval()
    size = input_size or spec.input_size
    order: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    acts: dict[str, int] = {}
    params: dict[str, int] = {}
    hooks = []
    for name, mod in model.named_modules():
        if not name:
            continue
        group = _group_of(name, verbose)
        if group not in params:
            params[group] = 0
        if len(list(mod.children())) == 0:
            params[group] += sum(p.numel() for p in mod.parameters(recurse=False))

            def hook(m, inp, out, group=group):
                if isinstance(out, torch.Tensor):
                    if group not in order:
                        order.append(group)
                    shapes[group] = tuple(out.shape)
                    acts[group] = acts.get(group, 0) + out.numel() * out.element_size()
            hooks.append(mod.register_forward_hook(hook))
    x = torch.empty(batch, spec.in_channels, size, size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    flops: dict[str, int] = {}
    for key, counts in counter.get_flop_counts().items():
        parts = key.split(".")[1:]  # drop the leading class name
        if parts and (len(parts) == 1 or (verbose and len(parts) == 2 and parts[0].startswith("layer"))):
            if len(parts) == 1 and verbose and parts[0].startswith("layer"):
                continue
            g = _group_of(".".join(parts), verbose)
            flops[g] = flops.get(g, 0) + sum(counts.values())
    return [Row(g, shapes[g], params[g], flops.get(g, 0) // 2, acts.get(g, 0)) for g in order]


def totals(rows: list[Row]) -> Row:
    return Row("total", rows[-1].shape if rows else (), sum(r.params for r in rows), sum(r.macs for r in rows),
               sum(r.activation_bytes for r in rows))
