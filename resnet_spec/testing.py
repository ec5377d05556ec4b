"""Regression tests for your own specs: assert that a spec builds the same network as a reference model.

    from resnet_spec.testing import assert_same_network

    def test_my_spec_is_torchvisions_resnet50():
        assert_same_network("specs/my_resnet50.yaml", "torchvision:resnet50", input_size=64)

The check is `resnet-spec compare`'s: state_dict keys and shapes, a strict load of the reference's weights
(its norm weights and running statistics randomised first), then the outputs of both on one random input.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .spec.types import ResNetSpec


def assert_same_network(spec: ResNetSpec | str | Path, reference: str | nn.Module, *, input_size: int | None = None,
                        dtype: torch.dtype = torch.float64, reference_kwargs: Mapping[str, object] | None = None,
                        batch: int = 2, seed: int = 0) -> None:
    """Raise AssertionError unless `spec` (a ResNetSpec, a spec file or a shipped spec's name) builds the
    network `reference` is: "torchvision:NAME", "timm:NAME" (built with reference_kwargs), or a module.

    input_size defaults to the spec's; float64 (the default) makes the output check exact up to rounding.
    The failure message lists the differing keys, or names the first module whose output differs.
    A module passed as the reference is copied, never changed.
    """
    from .spec.load import load_spec
    from .tools.compare import compare_to_model, key_table, parse_reference, randomise_norms_, reference_model
    the_spec = spec if not isinstance(spec, (str, Path)) else load_spec(spec)
    if isinstance(reference, nn.Module):
        if reference_kwargs:
            raise ValueError("reference_kwargs applies to a reference named torchvision:NAME or timm:NAME")
        theirs, name = copy.deepcopy(reference).cpu().eval(), type(reference).__name__
    else:
        ref = parse_reference(reference)
        theirs, name = reference_model(ref, reference_kwargs), str(ref)
    randomise_norms_(theirs, seed)
    size = input_size or the_spec.input_size
    keys, out = compare_to_model(the_spec, theirs, size, batch, torch.device("cpu"), dtype, seed)
    where = f"spec '{the_spec.name}' and {name}"
    if not keys.same:
        raise AssertionError(
            "\n".join([f"{where} differ in their state_dicts: {len(keys.missing)} keys missing, "
                       f"{len(keys.extra)} extra, {len(keys.mismatched)} of another shape", *key_table(keys)]))
    assert out is not None  # compare_to_model compares outputs whenever the keys match
    if not out.shapes_match:
        raise AssertionError(f"{where}: the output shapes differ (input {tuple(out.input_shape)})")
    if not out.same:
        first = (f"; first difference: the output of {out.first_difference[0]} "
                 f"(max rel diff {out.first_difference[1]:.3g})" if out.first_difference else "")
        raise AssertionError(f"{where}: outputs differ ({out.dtype}, input {tuple(out.input_shape)}): max rel diff "
                             f"{out.max_rel:.3g} > tolerance {out.tolerance:g}{first}")
