"""Cost caps checked before a model is built: blocks, parameters and activation memory.

The schema bounds each field on its own, but fields multiply: a schema-valid spec can ask for
10^19 parameters. The estimate comes from resnet_spec.analysis on the meta device, so nothing is
allocated however large the spec; only the count of blocks, which sets how long that analysis
takes, is checked first, from the spec alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError, LimitError
from ..spec.types import ResNetSpec

if TYPE_CHECKING:  # analysis imports torch, which this module leaves to check() itself
    from .analysis import Row


@dataclass(frozen=True)
class Limits:
    """Caps on what one build may cost. The defaults clear every shipped spec many times over."""

    max_params: int = 1_000_000_000      # 4 GB of float32 weights; wide_resnet101_2 has 127 M
    max_activation_mb: int = 16_384      # every layer's output for one forward pass, summed
    max_blocks: int = 1_000              # ResNet-1202, the deepest in the paper, has 600


DEFAULT_LIMITS = Limits()  # shared as the default argument: a frozen dataclass, so no call can change it


@dataclass(frozen=True)
class Cost:
    """What a spec costs at an input size and batch, as resnet_spec.analysis counts it."""

    blocks: int
    params: int
    activation_bytes: int
    input_size: int
    batch: int
    rows: tuple[Row, ...]  # the per-part analysis the estimate came from


def check(spec: ResNetSpec, limits: Limits = DEFAULT_LIMITS, input_size: int | None = None, batch: int = 1) -> Cost:
    """The cost of building spec and running a batch through it; LimitError if any cap is passed."""
    import torch

    from .analysis import analyse, totals
    size = input_size or spec.input_size
    if spec.num_blocks > limits.max_blocks:
        raise LimitError(f"{spec.name}: {spec.num_blocks:,} residual blocks, more than the cap of "
                         f"{limits.max_blocks:,}", limit="max_blocks")
    cap = limits.max_activation_mb * 2**20
    # The input tensor alone, checked first so that the analysis never sizes a tensor past 2**63 bytes.
    itemsize = torch.empty((), dtype=torch.get_default_dtype()).element_size()
    input_bytes = batch * spec.in_channels * size * size * itemsize
    if input_bytes > cap:
        raise LimitError(f"{spec.name}: the {batch}x{spec.in_channels}x{size}x{size} input alone needs "
                         f"{_mb(input_bytes)}, more than the cap of {limits.max_activation_mb:,} MB",
                         limit="max_activation_mb")
    try:
        rows = analyse(spec, size, batch)
        total = totals(rows)
    except Exception as e:  # noqa: BLE001 - the meta forward is where a shape no rule foresaw shows up
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        if "overflow" in first:
            raise LimitError(f"{spec.name}: its activations at {size}x{size}, batch {batch}, are too large to "
                             "address (a tensor size overflows 64 bits)") from None
        # Nothing real was allocated yet; say so rather than show a traceback.
        raise InputError(f"{spec.name}: the network fails on a {size}x{size} input, found on the meta device "
                         f"before anything was allocated ({type(e).__name__}: {first})") from e
    if total.params > limits.max_params:
        raise LimitError(f"{spec.name}: {total.params:,} parameters, more than the cap of {limits.max_params:,}",
                         limit="max_params")
    if total.activation_bytes > cap:
        raise LimitError(f"{spec.name}: activations of {_mb(total.activation_bytes)} for a {batch}x{spec.in_channels}"
                         f"x{size}x{size} input, more than the cap of {limits.max_activation_mb:,} MB",
                         limit="max_activation_mb")
    return Cost(spec.num_blocks, total.params, total.activation_bytes, size, batch, tuple(rows))


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"
