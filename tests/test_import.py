"""import: a spec read from a reference's module structure builds the same network (the round trip)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers import SPECS
from resnet_spec.api import load_spec
from resnet_spec.model.factory import build_model
from resnet_spec.tools.compare import Reference, compare_to_model, randomise_norms_, reference_model
from resnet_spec.tools.importer import import_model

TORCHVISION = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
               "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]
TIMM = ["resnet18d", "resnet26d", "resnet50c", "resnet50d", "resnet50s", "resnet50t", "seresnet50", "ecaresnet50d",
        "resnext50d_32x4d", "seresnext50_32x4d", "resnet50_gn", "resnetblur50", "resnetaa50d"]


def _structure(spec):
    """The fields that decide the network (not its name, description or source data)."""
    return dataclasses.replace(spec, name="", description="", data={})


def _round_trip(ref: Reference, tmp_path) -> None:
    """Import the reference, write and reload the YAML, build it, and compare with the reference itself."""
    theirs = reference_model(ref)
    data, text = import_model(ref, theirs)
    path = tmp_path / f"{ref.name}.yaml"
    path.write_text(text)
    spec = load_spec(path)  # the written YAML goes through the real loader, schema and rules
    assert spec.data == data
    if (SPECS / f"{ref.name}.yaml").exists():  # it says what the shipped spec says
        assert _structure(spec) == _structure(load_spec(ref.name))
    randomise_norms_(theirs, seed=1)
    keys, out = compare_to_model(spec, theirs, 32, 1, torch.device("cpu"), torch.float32, seed=1)
    assert keys.same, keys
    assert out.same and out.max_abs == 0.0, out  # same ops in the same order: bit-identical


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_round_trip(name, tmp_path):
    _round_trip(Reference("torchvision", name), tmp_path)


@pytest.mark.parametrize("name", TIMM)
def test_timm_round_trip(name, tmp_path):
    pytest.importorskip("timm")
    if not (SPECS / f"{name}.yaml").exists():
        pytest.skip(f"no shipped spec specs/{name}.yaml")
    _round_trip(Reference("timm", name), tmp_path)


def test_cli_import_then_compare(cli, tmp_path):
    out_file = tmp_path / "r34.yaml"
    code, out, err = cli(["import", "torchvision:resnet34", "--out", out_file])
    assert code == 0, err
    assert f"wrote {out_file}" in out
    text = out_file.read_text()
    assert text.startswith("# resnet34 (torchvision:resnet34)")
    assert "stages:\n  - {channels: 64, blocks: 3, stride: 1}\n" in text
    code, out, err = cli(["compare", out_file, "--reference", "torchvision:resnet34", "--input-size", "32",
                          "--dtype", "float64"])
    assert code == 0, out + err


def test_cli_import_prints_without_out(cli):
    code, out, _ = cli(["import", "torchvision:resnext50_32x4d"])
    assert code == 0
    assert "block: {type: bottleneck, groups: 32, width_per_group: 4}" in out


@pytest.mark.parametrize("ref, module", [
    ("torchvision:vgg11", "module 'features' (Sequential)"),
    ("torchvision:mobilenet_v2", "module 'features' (Sequential)"),
    ("timm:skresnet18", "module 'layer1.0."),
    ("timm:resnet50_nope", "timm has no model named"),
])
def test_unexpressible_structure_names_the_module(cli, ref, module):
    if ref.startswith("timm:"):
        pytest.importorskip("timm")
    code, out, err = cli(["import", ref])
    assert code == 1 and out == ""
    assert module in err and len(err.strip().splitlines()) == 1


def _kernel5(m):
    m.layer2[1].conv2 = torch.nn.Conv2d(128, 128, 5, padding=2, bias=False)


def _silu(m):
    m.layer3[1].relu = torch.nn.SiLU()


def _eps(m):
    m.layer4[0].bn1.eps = 1e-3


def _pool(m):
    m.maxpool = torch.nn.MaxPool2d(2, 2)


@pytest.mark.parametrize("change, message", [
    (_kernel5, r"module 'layer2.1.conv2' \(Conv2d\) does not fit the spec language: the nearest spec builds"),
    (_silu, r"module 'layer3.1.relu' \(SiLU\) does not fit .*: every activation must be the stem's \(relu\)"),
    (_eps, r"module 'layer4.0.bn1' \(BatchNorm2d\) does not fit .*: every norm must be configured alike"),
    (_pool, r"module 'maxpool' \(MaxPool2d\) does not fit"),
])
def test_unexpressible_part_names_the_module(change, message):
    import torchvision

    from resnet_spec.tools.importer import Unfit
    model = torchvision.models.resnet18()
    change(model)
    with pytest.raises(Unfit, match=message):
        import_model(Reference("torchvision", "resnet18"), model)


def test_import_out_folder_missing(cli, tmp_path):
    code, _, err = cli(["import", "torchvision:resnet18", "--out", tmp_path / "no" / "x.yaml"])
    assert code == 1 and "does not exist" in err


@pytest.mark.parametrize("value", [1e-05, 0.1, 1e20, 2.5e-7, 0.0625, 3, "3x3", "yes", "on", "a: b", "resnet50",
                                   True, None, {"type": "se", "ratio": 0.25}, [1, 2]])
def test_written_yaml_reads_back_as_the_same_value(value):
    import yaml

    from resnet_spec.spec.yamlwrite import flow
    assert yaml.safe_load(f"v: {flow(value)}") == {"v": value}


def _import_and_compare(ref: Reference, model: torch.nn.Module):
    """Import an instantiated model and return (spec data, key diff, output diff) at 64x64 in float64."""
    from resnet_spec.spec.types import from_data
    data, _ = import_model(ref, model)
    randomise_norms_(model, seed=2)
    keys, out = compare_to_model(from_data(data, ref.name), model, 64, 1, torch.device("cpu"), torch.float64, seed=2)
    return data, keys, out


def test_dilation_is_read_from_the_convs():
    import torchvision
    model = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True]).eval()
    data, keys, out = _import_and_compare(Reference("torchvision", "resnet50"), model)
    assert [(s["stride"], s.get("dilation", 1)) for s in data["stages"]] == [(1, 1), (2, 1), (1, 2), (1, 4)]
    assert keys.same and out.max_abs == 0.0


def test_dropout_and_drop_path_are_read():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18d", drop_rate=0.25, drop_path_rate=0.1).eval()
    data, keys, out = _import_and_compare(Reference("timm", "resnet18d"), model)
    assert data["head"] == {"num_classes": 1000, "dropout": 0.25} and data["drop_path_rate"] == pytest.approx(0.1)
    assert keys.same and out.max_abs == 0.0


def test_stage_blocks_and_per_block_overrides_are_recovered(tmp_path):
    """A network whose blocks differ by stage and by block: the import finds the same block at every index."""
    from resnet_spec.spec.types import from_data
    path = tmp_path / "mixed.yaml"
    path.write_text("spec_version: 1\nextends: resnet50\nstages:\n"
                    "  - {channels: 64, blocks: 2}\n"
                    "  - {channels: 128, blocks: 3, stride: 2, block: {attention: {type: se}}}\n"
                    "  - {channels: 256, blocks: 3, stride: 2, overrides: [{index: 1, block: {groups: 2}}]}\n"
                    "  - {channels: 512, blocks: 2, stride: 2, block: {stride_on: 1x1}}\n")
    spec = load_spec(path)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    data, keys, out = _import_and_compare(Reference("torchvision", "mixed"), model)
    imported = from_data(data, "mixed")
    for a, b in zip(spec.stages, imported.stages, strict=True):
        assert [a.block_at(i) for i in range(a.blocks)] == [b.block_at(i) for i in range(b.blocks)]
    assert data["stages"][2]["overrides"] == [{"index": 1, "block": {"groups": 2}}]
    assert keys.same and out.max_abs == 0.0
