"""build --diagram: a plain SVG that parses as XML and names the stem, every stage and the head."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from helpers import SPECS
from resnet_spec.api import load_spec
from resnet_spec.model.analysis import analyse
from resnet_spec.tools.diagram import render_svg

NS = {"svg": "http://www.w3.org/2000/svg"}


def _texts(root) -> list[str]:
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


def _boxes(root) -> dict[str, list[str]]:
    return {g.get("id"): [t.text for t in g.findall("svg:text", NS)] for g in root.findall("svg:g", NS)}


def test_build_writes_a_diagram(cli, tmp_path):
    out = tmp_path / "arch.svg"
    code, stdout, err = cli(["build", "resnet50", "--dry-run", "--diagram", out])
    assert code == 0, err
    assert f"wrote {out}" in stdout
    root = ET.parse(out).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    boxes = _boxes(root)
    assert list(boxes) == ["input", "stem", "layer1", "layer2", "layer3", "layer4", "head"]
    for i, n in enumerate([3, 4, 6, 3], 1):
        assert boxes[f"layer{i}"][0] == f"layer{i}: {n} x bottleneck"
    assert boxes["layer2"][1] == "channels 128, out 512, stride 2"
    assert boxes["head"][:2] == ["head: global average pool", "linear 2048 -> 1000"]
    shapes = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("class") == "shape"]
    assert shapes == ["3x224x224", "64x56x56", "256x56x56", "512x28x28", "1024x14x14", "2048x7x7"]


@pytest.mark.parametrize("name", [p.stem for p in sorted(SPECS.glob("*.yaml"))])
def test_every_shipped_spec_draws_and_names_each_stage(name):
    spec = load_spec(name)
    size = min(spec.input_size, 64)
    root = ET.fromstring(render_svg(spec, analyse(spec, size), size))
    boxes = _boxes(root)
    for i, stage in enumerate(spec.stages, 1):
        # The module's name: layerN, or stages.N-1 in a pre-activation net (timm's ResNetV2 names).
        name, kind = (f"stages.{i - 1}", f"pre-activation {stage.block.type}") if spec.preact else \
            (f"layer{i}", stage.block.type)
        assert boxes[name][0] == f"{name}: {stage.blocks} x {kind}"
    assert "stem" in boxes and "head" in boxes


def test_text_is_escaped(tmp_path):
    path = tmp_path / "odd.yaml"
    path.write_text('spec_version: 1\nextends: resnet10\nname: "a<b & c>"\ndescription: "<script>&amp;"\n')
    spec = load_spec(path)
    svg = render_svg(spec, analyse(spec, 32), 32)
    root = ET.fromstring(svg)
    assert "a<b & c>" in _texts(root)
    assert "<script>" not in svg


def test_cifar_stem_and_attention_are_described(tmp_path):
    spec = load_spec("resnet20")
    root = ET.fromstring(render_svg(spec, analyse(spec, 32), 32))
    boxes = _boxes(root)
    assert boxes["stem"][:2] == ["stem: 3x3 conv stride 1", "norm, relu, no pool"]
    assert "layer4" not in boxes
    if (SPECS / "seresnet50.yaml").exists():
        spec = load_spec("seresnet50")
        boxes = _boxes(ET.fromstring(render_svg(spec, analyse(spec, 64), 64)))
        assert "se attention" in boxes["layer1"][2]


def test_diagram_to_a_missing_folder_fails_before_work(cli, tmp_path):
    code, out, err = cli(["build", "resnet18", "--dry-run", "--diagram", tmp_path / "no" / "a.svg"])
    assert code == 1 and out == "" and "does not exist" in err


def test_features_spec_draws_only_the_stages_it_builds(tmp_path):
    path = tmp_path / "feat.yaml"
    path.write_text("spec_version: 1\nextends: resnet50\nfeatures: [1, 2]\n")
    spec = load_spec(path)
    boxes = _boxes(ET.fromstring(render_svg(spec, analyse(spec, 64), 64)))
    assert list(boxes) == ["input", "stem", "layer1", "layer2", "head"]
    assert boxes["head"] == ["features: stages 1, 2", "no classifier"]
