"""resnet_spec.testing.assert_same_network, and compare's --reference-arg: a passing and a failing pair each."""
from __future__ import annotations

import pytest
import torchvision

from resnet_spec.testing import assert_same_network


def test_a_spec_equals_its_torchvision_reference():
    assert_same_network("resnet18", "torchvision:resnet18", input_size=32)


def test_a_module_reference_is_used_and_left_unchanged():
    ref = torchvision.models.resnet18()
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    assert_same_network("resnet18", ref, input_size=32)
    assert all(v.equal(before[k]) for k, v in ref.state_dict().items()) and ref.training


def test_reference_kwargs_reach_the_constructor(tmp_path):
    (tmp_path / "ten.yaml").write_text("spec_version: 1\nextends: resnet18\nhead: {num_classes: 10}\n")
    assert_same_network(tmp_path / "ten.yaml", "torchvision:resnet18", input_size=32,
                        reference_kwargs={"num_classes": 10})
    with pytest.raises(AssertionError, match=r"fc\.weight"):
        assert_same_network(tmp_path / "ten.yaml", "torchvision:resnet18", input_size=32)


def test_a_different_network_names_the_first_differing_module():
    # The paper's ResNet-50 strides on the 1x1 conv: the same keys, different outputs from layer2.0 on.
    with pytest.raises(AssertionError, match=r"first difference: the output of layer2\.0 \(max rel diff"):
        assert_same_network("resnet50_paper", "torchvision:resnet50", input_size=32)


def test_other_keys_are_listed():
    with pytest.raises(AssertionError, match=r"96 extra(.|\n)*extra +layer1\.2\.conv1\.weight"):
        assert_same_network("resnet34", "torchvision:resnet18", input_size=32)


def test_compare_passes_reference_args(cli, tmp_path):
    (tmp_path / "ten.yaml").write_text("spec_version: 1\nextends: resnet18\nhead: {num_classes: 10}\n")
    argv = ["compare", tmp_path / "ten.yaml", "--reference", "torchvision:resnet18", "--input-size", "32"]
    code, out, err = cli([*argv, "--reference-arg", "num_classes=10"])
    assert code == 0, out + err
    assert cli(argv)[0] == 1  # differs: 1000 classes
    code, out, err = cli([*argv, "--reference-arg", "num_clases=10"])
    assert (code, out) == (2, "") and "torchvision:resnet18 does not take num_clases=10" in err
    assert cli([*argv, "--reference-arg", "num_classes"])[0] == 2  # not KEY=VALUE: usage


def test_compare_passes_typed_reference_args_to_timm(cli, tmp_path):
    pytest.importorskip("timm")
    (tmp_path / "os16.yaml").write_text("spec_version: 1\nextends: resnet18d\noutput_stride: 16\n")
    code, out, err = cli(["compare", tmp_path / "os16.yaml", "--reference", "timm:resnet18d", "--input-size", "32",
                          "--reference-arg", "output_stride=16"])
    assert code == 0, out + err


@pytest.mark.parametrize("text, value", [("10", 10), ("0.5", 0.5), ("true", True), ("False", False),
                                         ("avg", "avg"), ("", "")])
def test_reference_arg_values(text, value):
    from resnet_spec.cli.compare import reference_arg
    assert reference_arg(f"k={text}") == ("k", value) and type(reference_arg(f"k={text}")[1]) is type(value)
