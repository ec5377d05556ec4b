"""Build tier: every file in specs/ builds, runs, and gives the shapes its analysis predicts."""
from __future__ import annotations

import pytest
import torch

from helpers import SPECS
from resnet_spec import build_model, load_spec
from resnet_spec.model.analysis import analyse


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_spec_builds_and_runs(path):
    spec = load_spec(path)
    size = min(spec.input_size, 64)
    model = build_model(spec).eval()
    rows = analyse(spec, size, batch=2)
    x = torch.randn(2, spec.in_channels, size, size)
    with torch.no_grad():
        out = model(x)
    if isinstance(out, list):
        assert len(out) == len(spec.features)
    else:
        assert tuple(out.shape) == rows[-1].shape
        if spec.head is not None:
            assert out.shape == (2, spec.head.num_classes)
    assert sum(p.numel() for p in model.parameters()) == sum(r.params for r in rows)


def test_num_classes_and_headless_feature_extractor(tmp_path):
    model = build_model("resnet18", num_classes=7)
    assert model.fc.out_features == 7
    (tmp_path / "trunk.yaml").write_text("spec_version: 1\nextends: resnet18\nhead: null\n")
    trunk = build_model(tmp_path / "trunk.yaml").eval()
    assert not hasattr(trunk, "fc") or trunk.fc is None
    with torch.no_grad():
        assert trunk(torch.randn(1, 3, 64, 64)).shape == (1, 512, 2, 2)


def test_seed_networks_match_the_seed_code():
    # Seed 000: stages of 128, 256, 512, 512 channels; layer1 opens with a projection.
    seed000 = build_model("seed000_resnet34")
    assert seed000.layer1[0].downsample is not None
    assert [seed000.layer4[0].conv1.out_channels, seed000.fc.in_features] == [512, 512]
    # Seed 001: 7 classes, conv bias, no stem norm.
    seed001 = build_model("seed001_resnet18")
    assert seed001.fc.out_features == 7 and seed001.conv1.bias is not None
    assert isinstance(seed001.bn1, torch.nn.Identity) and seed001.layer1[0].conv1.bias is not None
    # The paper's ResNet-50: stride on the first 1x1 conv of the bottleneck.
    paper = build_model("resnet50_paper")
    assert paper.layer2[0].conv1.stride == (2, 2) and paper.layer2[0].conv2.stride == (1, 1)
    tv = build_model("resnet50")
    assert tv.layer2[0].conv1.stride == (1, 1) and tv.layer2[0].conv2.stride == (2, 2)


def test_input_channels_and_zero_init_residual(tmp_path):
    (tmp_path / "gray.yaml").write_text(
        "spec_version: 1\nextends: resnet50\ninput: {channels: 1}\nzero_init_residual: true\n")
    model = build_model(tmp_path / "gray.yaml")
    assert model.conv1.in_channels == 1
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for layer in (model.layer1, model.layer4) for b in layer)
