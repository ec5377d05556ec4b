"""The stem's geometry, in the one place everything reads it from: each conv's width, kernel and stride.

Pure Python: the spec types, the layout plan, the rules, the builder, the diagram and the importer
all ask this module what a stem of a given type and width is made of.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..registry import lookup


@dataclass(frozen=True)
class StemConvs:
    """The stem's convolutions: the first has `kernel` and `stride`, any others are 3x3 stride 1."""

    widths: tuple[int, ...]   # output channels of each conv, in order
    kernel: int
    stride: int

    @property
    def padding(self) -> int:
        return self.kernel // 2

    @property
    def out_channels(self) -> int:
        return self.widths[-1]


def _conv7x7(width: int) -> StemConvs:
    return StemConvs((width,), 7, 2)


def _cifar(width: int) -> StemConvs:
    return StemConvs((width,), 3, 1)


def _deep(width: int) -> StemConvs:
    # timm's deep stem (ResNet-C, Bag of Tricks): three 3x3 convs of w, w and 2w channels.
    return StemConvs((width, width, 2 * width), 3, 2)


def _deep_tiered(width: int) -> StemConvs:
    # timm's tiered stem (resnet*t): the first conv has 3/4 of the width, rounded down to whole quarters.
    return StemConvs((3 * (width // 4), width, 2 * width), 3, 2)


STEMS = {"conv7x7": _conv7x7, "cifar": _cifar, "deep": _deep, "deep_tiered": _deep_tiered}


def stem_convs(type: str, width: int) -> StemConvs:
    """The convs of a stem of this type and width; an unknown type is a ValueError."""
    return lookup(STEMS, "stem type", type)(width)
