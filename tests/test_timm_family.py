"""The whole of timm's ResNet family in the spec language (issue 13): every model of timm's `resnet` and
`resnetv2` modules imports through `resnet-spec import` and equals timm, and the pre-activation specs equal timm's
ResNetV2 in seeded init, train-mode outputs and gradients.

Equality is exact (torch.equal, float32): the same ops run in the same order. The largest models (over about
8 s each on two CPU cores, most of it timm's own random init) are marked slow; `-m slow` runs them.
"""
from __future__ import annotations

import pytest
import torch

from helpers import SPECS, require_timm
from resnet_spec import build_model
from resnet_spec.api import load_spec
from resnet_spec.tools.compare import Reference, compare_to_model, randomise_norms_, reference_model
from resnet_spec.tools.importer import import_model

timm = require_timm()

SLOW = {"resnetrs270", "resnetrs350", "resnetrs420", "ecaresnet269d", "resnetv2_101x1_bit", "resnetv2_101x3_bit",
        "resnetv2_152", "resnetv2_152d", "resnetv2_152x2_bit", "resnetv2_152x4_bit", "resnetv2_50x3_bit"}


def _models(module: str) -> list:
    return [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else [], id=n)
            for n in timm.list_models(module=module)]


def _imports_and_equals(name: str, tmp_path) -> None:
    ref = Reference("timm", name)
    theirs = reference_model(ref)
    _, text = import_model(ref, theirs)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    spec = load_spec(path)  # the written YAML, through the loader, the schema and the rules
    randomise_norms_(theirs, seed=1)
    keys, out = compare_to_model(spec, theirs, 32, 1, torch.device("cpu"), torch.float32, seed=1)
    assert keys.same, keys
    assert out is not None and out.same and out.max_abs == 0.0, out


def test_timm_module_sizes():
    """The counts the issue names, so a timm upgrade that adds models is noticed (timm 1.0.31: 81 and 20)."""
    assert len(timm.list_models(module="resnet")) >= 81
    assert len(timm.list_models(module="resnetv2")) >= 20


@pytest.mark.parametrize("name", _models("resnet"))
def test_every_timm_resnet_imports_and_equals_timm(name, tmp_path):
    _imports_and_equals(name, tmp_path)


@pytest.mark.parametrize("name", _models("resnetv2"))
def test_every_timm_resnetv2_imports_and_equals_timm(name, tmp_path):
    _imports_and_equals(name, tmp_path)


PREACT_SPECS = ["resnetv2_50", "resnetv2_50d", "resnetv2_50d_gn", "resnetv2_50d_frn", "resnetv2_50d_evos",
                "resnetv2_50x1_bit"]


@pytest.mark.parametrize("name", PREACT_SPECS)
def test_preact_spec_is_timms_resnetv2(name):
    """Same keys and seeded init; timm's state_dict (random norms) loads strictly; eval outputs on an odd size,
    train-mode outputs, every gradient and the running statistics after the step are bit-equal."""
    assert (SPECS / f"{name}.yaml").exists()
    torch.manual_seed(0)
    ours = build_model(name)
    torch.manual_seed(0)
    theirs = timm.create_model(name, pretrained=False)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a), "seeded init differs"
    randomise_norms_(theirs, seed=1)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 65, 65, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), theirs.eval()(x))
    ours.train()
    theirs.train()
    y, z = ours(x), theirs(x)
    assert torch.equal(y, z)
    y.square().mean().backward()
    z.square().mean().backward()
    for (n, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), n
    a, b = ours.state_dict(), theirs.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "running statistics differ after the step"


@pytest.mark.parametrize(("name", "total", "paper_count", "paper"), [
    ("preact_resnet164", 1_703_258, 1_679_034, "1.7M"),
    ("preact_resnet1001", 10_327_706, 10_178_490, "10.2M"),
])
def test_identity_mappings_cifar_parameter_counts(name, total, paper_count, paper):
    """He et al. 2016, Table 2: 1.7M and 10.2M. The total counts every trainable parameter; the paper's figures
    are the conv and fc weights (no BN scales and shifts), which is the rule that gives both of its numbers."""
    model = build_model(name, init="none")
    assert sum(p.numel() for p in model.parameters()) == total
    weights = sum(p.numel() for n, p in model.named_parameters() if p.ndim > 1 or n == "head.fc.bias")
    assert weights == paper_count
    assert f"{weights / 1e6:.1f}M" == paper
    if name == "preact_resnet164":
        assert f"{total / 1e6:.1f}M" == paper  # the total rounds to the paper's figure too
    spec = load_spec(name)
    assert spec.preact and [s.blocks for s in spec.stages] == [(int(name[13:]) - 2) // 9] * 3  # depth = 9n + 2
