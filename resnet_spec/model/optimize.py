"""Inference-only rewrites of a built model: each BatchNorm folded into its conv, channels_last, optional compile."""
from __future__ import annotations

from typing import cast

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """The (conv, batchnorm) module names where the BatchNorm2d reads a Conv2d's output and nothing else does.

    Found on the traced graph, not by attribute names, so a pair is folded only where the data flow
    really is conv -> bn (an anti-alias pool or an attention module in between rules it out).
    """
    graph = fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or type(modules[node.target]) is not nn.BatchNorm2d:
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module" and type(modules[src.target]) is nn.Conv2d):
            continue
        # A module called twice, or a conv whose output also feeds the skip path, cannot be folded.
        conv, bn = str(src.target), str(node.target)  # a call_module node's target is the module's name
        if len(src.users) == 1 and calls[conv] == 1 and calls[bn] == 1:
            pairs.append((conv, bn))
    return pairs


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

    The BatchNorm becomes nn.Identity, so module names and the model's class are kept. Only valid
    for inference: the folded conv applies the running statistics, as BatchNorm does in eval mode.
    """
    pairs = conv_bn_pairs(model)
    modules = dict(model.named_modules())
    for conv_name, bn_name in pairs:
        model.set_submodule(conv_name, _folded_conv(modules[conv_name], modules[bn_name]))
        model.set_submodule(bn_name, nn.Identity())
    return pairs


def optimize_for_inference(model: nn.Module, compile: bool = False) -> nn.Module:
    """Eval mode, no gradients, BatchNorms folded, weights in channels_last; `compile` adds torch.compile.

    Inputs may stay in the default (NCHW) layout: a conv whose weight is channels_last writes a
    channels_last output, and the rest of the network follows it. Outputs equal the eager model's
    to within float rounding (the fold changes the order of the multiply-adds).
    """
    if any(p.is_meta for p in model.parameters()):
        raise ValueError("cannot optimize a model without weights (it is on the meta device); load them first")
    model.eval().requires_grad_(False)
    fold_batchnorms(model)
    model.to(memory_format=torch.channels_last)
    if compile:
        return cast(nn.Module, torch.compile(model))  # an OptimizedModule
    return model


def _pair(t: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d's size tuple as the (height, width) pair its constructor is typed to take."""
    return t[0], t[1]
