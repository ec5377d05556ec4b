"""compare: structural diff, strict load of a reference's weights and output difference, through the CLI."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from helpers import SPECS
from resnet_spec.tools.compare import key_diff


def test_same_network_exits_0_with_zero_difference(cli):
    code, out, err = cli(["compare", "resnet18", "--reference", "torchvision:resnet18", "--input-size", "32",
                          "--dtype", "float64"])
    assert code == 0, err
    assert "0 missing, 0 extra, 0 of another shape" in out
    assert "max abs diff 0," in out and "float64" in out
    assert out.rstrip().endswith("same network")


def test_other_depth_reports_missing_keys_and_exits_1(cli):
    code, out, _ = cli(["compare", "resnet18", "--reference", "torchvision:resnet34", "--input-size", "32"])
    assert code == 1
    assert "layer1.2.conv1.weight" in out and "missing" in out
    assert "outputs not compared" in out
    assert out.rstrip().endswith("DIFFERENT networks")


def test_same_keys_but_other_wiring_is_caught_by_the_outputs(cli):
    # The paper's ResNet-50 has torchvision's shapes, with the stride on the 1x1 conv instead of the 3x3.
    code, out, _ = cli(["compare", "resnet50_paper", "--reference", "torchvision:resnet50", "--input-size", "32",
                        "--format", "json"])
    assert code == 1
    result = json.loads(out)
    assert result["same"] is False
    assert result["keys"]["missing"] == [] and result["keys"]["extra"] == [] and result["keys"]["mismatched"] == []
    assert result["outputs"]["max_rel_diff"] > result["outputs"]["tolerance"]
    assert result["outputs"]["first_difference"]["module"] == "layer2.0"


def test_json_output(cli):
    code, out, _ = cli(["compare", "resnet10", "--reference", "torchvision:resnet18", "--input-size", "32",
                        "--format", "json"])
    result = json.loads(out)
    assert code == 1 and result["same"] is False and result["outputs"] is None
    assert {m["key"] for m in result["keys"]["missing"]} >= {"layer1.1.conv1.weight", "layer4.1.bn2.running_var"}

    code, out, _ = cli(["compare", "resnet34", "--reference", "torchvision:resnet34", "--input-size", "32",
                        "--format", "json", "--batch", "1"])
    result = json.loads(out)
    assert code == 0 and result["same"] is True
    assert result["outputs"]["input_shape"] == [1, 3, 32, 32]
    assert result["outputs"]["max_abs_diff"] <= result["outputs"]["tolerance"]


def test_shape_mismatch_is_listed(cli, tmp_path):
    spec = tmp_path / "r18_10.yaml"
    spec.write_text("spec_version: 1\nextends: resnet18\nhead: {num_classes: 10}\n")
    code, out, _ = cli(["compare", spec, "--reference", "torchvision:resnet18", "--input-size", "32"])
    assert code == 1
    line = next(line for line in out.splitlines() if "fc.weight" in line)
    assert line.split()[0] == "shape" and "10x512" in line and "1000x512" in line


@pytest.mark.skipif(not (SPECS / "resnet18d.yaml").exists(), reason="no resnet18d spec shipped")
def test_timm_reference(cli):
    pytest.importorskip("timm")
    code, out, err = cli(["compare", "resnet18d", "--reference", "timm:resnet18d", "--input-size", "32"])
    assert code == 0, out + err


@pytest.mark.parametrize("ref, message", [
    ("torchvision:resnet19", "torchvision has no model named 'resnet19'; did you mean 'torchvision:resnet18'?"),
    ("timm:resnet50dd", "timm has no model named 'resnet50dd'"),
    ("resnet50", "must be torchvision:NAME or timm:NAME"),
    ("keras:resnet50", "must be torchvision:NAME or timm:NAME"),
])
def test_bad_reference_is_one_line(cli, ref, message):
    code, out, err = cli(["compare", "resnet18", "--reference", ref])
    assert code == 2 and out == ""  # trouble, not "differs" (as diff(1) and cmp(1))
    assert message in err and len(err.strip().splitlines()) == 1


def test_without_timm_says_how_to_install_it(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    code, _, err = cli(["compare", "resnet18", "--reference", "timm:resnet18"])
    assert code == 2 and "pip install timm" in err


def test_bad_arguments(cli):
    assert cli(["compare", "resnet18", "--reference", "torchvision:resnet18", "--input-size", "0"])[0] == 2
    assert cli(["compare", "resnet18", "--reference", "torchvision:resnet18", "--dtype", "float16"])[0] == 2
    assert cli(["compare", "resnet18"])[0] == 2
    code, _, err = cli(["compare", "resnet18", "--reference", "torchvision:resnet18", "--device", "tpu"])
    assert code == 2 and "device" in err


def test_key_diff():
    ours = {"a": torch.zeros(2, 3), "b": torch.zeros(4), "c": torch.zeros(1)}
    theirs = {"a": torch.zeros(3, 2), "b": torch.zeros(4), "d": torch.zeros(5)}
    d = key_diff(ours, theirs)
    assert d.missing == (("d", (5,)),) and d.extra == (("c", (1,)),)
    assert d.mismatched == (("a", (2, 3), (3, 2)),) and not d.same
    assert key_diff(theirs, theirs).same


# diff


def test_diff_shows_fields_and_cost_per_stage(cli):
    import torchvision
    code, out, _ = cli(["diff", "resnet50", "resnext50_32x4d"])
    assert code == 1
    assert any(line.split() == ["$.block.groups", "1", "->", "32"] for line in out.splitlines())
    assert any(line.split() == ["$.block.width_per_group", "64", "->", "4"] for line in out.splitlines())
    total = next(line for line in out.splitlines() if line.startswith("total")).split()
    meta = {n: torchvision.models.get_model_weights(n).IMAGENET1K_V1.meta for n in ("resnet50", "resnext50_32x4d")}
    assert total[1:3] == [f"{meta['resnet50']['num_params']:,}", f"{meta['resnext50_32x4d']['num_params']:,}"]
    assert [line.split()[0] for line in out.splitlines()[-7:]] == ["stem", "layer1", "layer2", "layer3", "layer4",
                                                                   "head", "total"]


def test_diff_of_a_spec_with_itself_exits_0(cli):
    code, out, _ = cli(["diff", "resnet18", SPECS / "resnet18.yaml"])
    assert code == 0 and "no field differs" in out


def test_diff_resolves_extends_and_defaults(cli, tmp_path):
    # Spelling out a default, or inheriting a field through `extends`, changes nothing.
    spec = tmp_path / "same50.yaml"
    spec.write_text("spec_version: 1\nname: resnet50\ndescription: ResNet-50 v1.5 (torchvision), stride on the "
                    "bottleneck's 3x3 conv\nextends: resnet50\nblock: {stride_on: 3x3, groups: 1, expansion: null}\n"
                    "stem: {pool: max}\n")
    code, out, _ = cli(["diff", "resnet50", spec, "--format", "json"])
    assert code == 0, out
    assert json.loads(out)["fields"] == []


def test_diff_lists_a_removed_stage(cli, tmp_path):
    spec = tmp_path / "three.yaml"
    spec.write_text("spec_version: 1\nextends: resnet18\nname: resnet18\n"
                    "description: ResNet-18 from \"Deep Residual Learning for Image Recognition\" (He et al., 2015)\n")
    spec.write_text(spec.read_text() + "stages: [{channels: 64, blocks: 2}, {channels: 128, blocks: 2, stride: 2},"
                    " {channels: 256, blocks: 2, stride: 2}]\n")
    code, out, _ = cli(["diff", "resnet18", spec, "--format", "json"])
    result = json.loads(out)
    assert code == 1
    assert result["fields"] == [{"path": "$.stages[3]",
                                 "a": {"channels": 512, "blocks": 2, "stride": 2, "dilation": 1}}]
    layer4 = next(s for s in result["stages"] if s["name"] == "layer4")
    assert layer4["params_b"] is None and layer4["params_a"] > 0
    head = next(s for s in result["stages"] if s["name"] == "head")
    assert head["params_b"] == 256 * 1000 + 1000


def test_diff_bad_spec_is_reported(cli):
    code, _, err = cli(["diff", "resnet18", "resnet_nope"])
    assert code == 2 and "no shipped spec" in err  # trouble, as diff(1): 1 means "differs"


def test_nan_output_is_never_within_tolerance():
    from resnet_spec.tools.compare import output_diff
    x = torch.ones(1, 3)
    nan = torch.nn.Linear(3, 2)
    with torch.no_grad():
        nan.weight[0, 0] = float("nan")
    same = torch.nn.Linear(3, 2)
    assert output_diff(same, same, x).same
    result = output_diff(nan, same, x)
    assert result.shapes_match and not result.same and result.max_abs != result.max_abs  # NaN


def test_first_difference_names_the_first_strided_block(cli):
    # Moving the stride to the 1x1 conv changes nothing until the first block with a stride.
    code, out, _ = cli(["compare", "resnet50_paper", "--reference", "torchvision:resnet50", "--input-size", "32"])
    assert code == 1
    assert "first difference: the output of layer2.0 (max rel diff" in out
