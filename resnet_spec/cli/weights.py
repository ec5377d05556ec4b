"""What `build`, `export`, `predict` and `evaluate` share about --weights: read any source, refuse a checkpoint
whose embedded spec differs from the one given, and report what was done to the weights."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    import torch

    from ..model.weights import Weights
    from ..spec.types import ResNetSpec
    from ..train.predict import Trained


def spec_and_weights(spec_arg: str | None, weights_arg: str | None, ignore_spec: bool,
                     num_classes: int | None) -> tuple[ResNetSpec, Weights | None]:
    """The spec (given, or the one --weights carries) with --num-classes applied, and the weights if any;
    a checkpoint saved from another spec is refused unless ignore_spec. Checked before any work."""
    from pathlib import Path

    from ..api import load_spec
    from ..spec.types import with_num_classes
    from .common import UsageError, check_classifier, check_readable
    if spec_arg is None and not weights_arg:
        raise UsageError("give a SPEC, or --weights of a checkpoint that carries its spec")
    if weights_arg and not Path(weights_arg).is_dir():  # a folder is a train run or a Hugging Face model
        check_readable(weights_arg)
    weights = read(weights_arg) if weights_arg else None
    if spec_arg is None:
        assert weights is not None
        spec = embedded_spec(weights)
    else:
        spec = load_spec(spec_arg)
        if weights is not None and not ignore_spec and weights.spec_data is not None:
            refuse_other_spec(weights, spec)
    check_classifier(spec, num_classes)
    if num_classes is not None:
        spec = with_num_classes(spec, num_classes)
    return spec, weights


def read(path: str) -> Weights:
    """The weights at `path`, saying on stderr what was done to read them."""
    from ..model.weights import read_weights
    weights = read_weights(path)
    for note in weights.notes:
        print(f"weights: {note}", file=sys.stderr)
    return weights


def trained(checkpoint: str, spec_arg: str | None, device: torch.device, image_size: int | None) -> Trained:
    """predict's and evaluate's model: a train checkpoint or run folder, or plain weights with --spec."""
    from ..api import load_spec
    from ..train.predict import load_trained
    model = load_trained(checkpoint, device, image_size, load_spec(spec_arg) if spec_arg else None)
    for note in model.notes:
        print(f"weights: {note}", file=sys.stderr)
    return model


def embedded_spec(weights: Weights) -> ResNetSpec:
    """The spec a resnet-spec checkpoint (or a Hugging Face folder's config) carries."""
    from ..model.load import spec_of
    return spec_of(weights, weights.source)


def refuse_other_spec(weights: Weights, spec: ResNetSpec) -> None:
    """InputError listing the fields where the checkpoint's spec and `spec` differ (the classifier size aside)."""
    from ..spec.types import with_num_classes
    from ..tools.diff import field_changes
    theirs = embedded_spec(weights)
    if spec.head is not None and theirs.head is not None:
        theirs = with_num_classes(theirs, spec.head.num_classes)  # a new head is the head swap's business
    changes = field_changes(theirs, spec)
    if changes:
        shown = "; ".join(f"{c.path}: {c.a} in the checkpoint, {c.b} given" for c in changes[:4])
        more = f"; and {len(changes) - 4} more" if len(changes) > 4 else ""
        raise InputError(f"{weights.source}: the checkpoint was saved from spec '{theirs.name}', which differs from "
                         f"'{spec.name}': {shown}{more} (--ignore-spec loads it anyway)")
