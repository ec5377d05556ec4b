"""What `build`, `export`, `predict` and `evaluate` share about --weights: read any source, refuse a checkpoint
whose embedded spec differs from the one given, and report what was done to the weights."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from ..model.weights import Weights
    from ..spec.types import ResNetSpec


def read(path: str, spec: ResNetSpec | None, ignore_spec: bool = False) -> Weights:
    """The weights at `path`; InputError when they embed a spec whose fields differ from `spec`'s."""
    from ..model.weights import read_weights
    weights = read_weights(path)
    for note in weights.notes:
        print(f"weights: {note}", file=sys.stderr)
    if spec is not None and weights.spec_data is not None and not ignore_spec:
        refuse_other_spec(weights, spec)
    return weights


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
