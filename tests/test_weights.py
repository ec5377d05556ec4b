"""One reader for weights: state_dicts in every common wrapper, files, run folders and Hugging Face folders.

Every source is checked by loading it into the spec-built model and comparing outputs with the model the
weights came from (torch.equal: same kernels, same order).
"""
from __future__ import annotations

import json

import pytest
import torch
import torchvision

from resnet_spec import build_model, load_spec
from resnet_spec.errors import InputError
from resnet_spec.model.checkpoint import save_model
from resnet_spec.model.weights import fit_weights, read_weights
from resnet_spec.spec.hf import hf_key_to_ours, ours_key_to_hf, spec_data_from_hf_config
from resnet_spec.tools.compare import randomise_norms_


def _randomise(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    randomise_norms_(model, seed)  # so that a wrong key mapping or a transposed tensor changes the outputs
    return model.eval()


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return _randomise(torchvision.models.resnet18(num_classes=7))


X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def _loaded(source, num_classes=7, reinit_head=False):
    model = build_model("resnet18", num_classes=num_classes).eval()
    notes = fit_weights(model, read_weights(source), reinit_head=reinit_head)
    return model, notes


WRAPS = {
    "bare": lambda sd: sd,
    "model": lambda sd: {"model": sd, "epoch": 3},
    "state_dict": lambda sd: {"state_dict": sd},
    "model_state_dict": lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {}},
    "ddp": lambda sd: {"module." + k: v for k, v in sd.items()},
    "compiled": lambda sd: {"_orig_mod." + k: v for k, v in sd.items()},
    "ddp_in_model": lambda sd: {"model": {"module." + k: v for k, v in sd.items()}},
}


@pytest.mark.parametrize("wrap", WRAPS)
def test_torchvision_state_dict_in_every_wrapper_loads_equal(reference, wrap, tmp_path):
    obj = WRAPS[wrap](reference.state_dict())
    for source in (obj, tmp_path / "w.pth"):
        if not isinstance(source, dict):
            torch.save(obj, source)
        model, notes = _loaded(source)
        with torch.no_grad():
            assert torch.equal(model(X), reference(X))
        if wrap != "bare":
            assert notes, "the reader says what it unwrapped"
    if wrap == "ddp":
        assert any("'module.'" in n for n in notes)


def test_safetensors_and_project_checkpoint_and_run_folder(reference, tmp_path):
    from safetensors.torch import save_file
    save_file(reference.state_dict(), str(tmp_path / "w.safetensors"))
    spec = load_spec("resnet18")
    ours = build_model(spec, num_classes=7)
    ours.load_state_dict(reference.state_dict())
    run = tmp_path / "run"
    run.mkdir()
    save_model(run / "last.pt", ours, spec)
    for source in (tmp_path / "w.safetensors", run / "last.pt", run):
        model, _ = _loaded(source)
        with torch.no_grad():
            assert torch.equal(model(X), reference(X))
    w = read_weights(run)
    assert w.spec_data is not None and w.name == "resnet18" and "run folder" in w.notes[0]


def test_timm_state_dict_loads_equal(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = _randomise(timm.create_model("resnet50d", num_classes=5))
    model = build_model("resnet50d", num_classes=5).eval()
    fit_weights(model, read_weights({"state_dict": ref.state_dict()}))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_head_swap_reinitialises_only_the_classifier(reference):
    torch.manual_seed(5)
    model, notes = _loaded(reference.state_dict(), num_classes=10, reinit_head=True)
    assert model.fc.out_features == 10
    assert "re-initialised: 7 classes in the weights, 10 in the model" in notes[-1]
    assert torch.equal(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert not torch.equal(model.fc.weight[:7], reference.fc.weight)


def test_class_count_mismatch_without_swap_names_the_count(reference):
    with pytest.raises(InputError, match=r"fc.weight: 7x512 in the weights, 10x512 in the model.*"
                                         r"the weights have 7 classes: use num_classes 7") as e:
        _loaded(reference.state_dict(), num_classes=10)
    assert e.value.setting == "num_classes"


def test_other_mismatch_groups_the_keys(reference):
    sd = {k: v for k, v in reference.state_dict().items() if not k.startswith("layer4.")}
    sd["extra.0.weight"] = torch.zeros(1)
    with pytest.raises(InputError, match=r"30 missing \(layer4.0.\* \(18 keys\), layer4.1.\* \(12 keys\)\), "
                                         r"1 unexpected \(extra.0.weight\)") as e:
        _loaded(sd)
    assert e.value.setting is None


def test_files_that_are_not_checkpoints_are_named(tmp_path, reference):
    (tmp_path / "net.yaml").write_text("spec_version: 1\nextends: resnet18\n")
    with pytest.raises(InputError, match="a YAML spec"):
        read_weights(tmp_path / "net.yaml")
    torch.jit.save(torch.jit.trace(reference, X), str(tmp_path / "m.pt"))
    with pytest.raises(InputError, match="a TorchScript program"):
        read_weights(tmp_path / "m.pt")
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\x09\x12\x07pytorch:onnx")
    with pytest.raises(InputError, match="an ONNX model"):
        read_weights(onnx)
    with pytest.raises(InputError, match="neither a train run .* nor a Hugging Face model"):
        read_weights(tmp_path)


def test_hf_config_with_another_activation_is_refused():
    cfg = {"layer_type": "basic", "depths": [1], "hidden_sizes": [8], "embedding_size": 8, "hidden_act": "gelu"}
    with pytest.raises(InputError, match="transformers keeps ReLU inside each block"):
        spec_data_from_hf_config(cfg, "x")


def test_hf_keys_round_trip():
    for ours in ("conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.bias",
                 "layer3.4.conv3.weight", "layer1.0.bn2.num_batches_tracked", "fc.bias"):
        assert hf_key_to_ours(ours_key_to_hf(ours)) == ours


@pytest.mark.parametrize(("layer", "act", "first", "in_bottleneck"),
                         [("basic", "relu", True, False), ("bottleneck", "relu", True, True),
                          ("bottleneck", "relu", False, False)])
def test_hugging_face_folder_loads_into_its_imported_spec(tmp_path, layer, act, first, in_bottleneck):
    transformers = pytest.importorskip("transformers")
    from resnet_spec.spec.load import load_spec as load
    cfg = transformers.ResNetConfig(layer_type=layer, depths=[1, 2], hidden_sizes=[16, 32], embedding_size=8,
                                    hidden_act=act, downsample_in_first_stage=first,
                                    downsample_in_bottleneck=in_bottleneck, num_labels=4)
    torch.manual_seed(0)
    hf = _randomise(transformers.ResNetForImageClassification(cfg))
    hf.save_pretrained(tmp_path / "hf")
    data = spec_data_from_hf_config(json.loads((tmp_path / "hf" / "config.json").read_text()), "hf_net")
    (tmp_path / "hf_net.yaml").write_text(json.dumps(data))  # JSON is YAML
    model = build_model(load(tmp_path / "hf_net.yaml")).eval()
    notes = fit_weights(model, read_weights(tmp_path / "hf"))
    assert any("transformers" in n for n in notes)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), hf(x).logits)


def test_hf_export_round_trip(tmp_path):
    """import (config -> spec), load (keys), export (folder), from_pretrained: the same logits all the way."""
    transformers = pytest.importorskip("transformers")
    from resnet_spec.spec.load import load_spec as load
    from resnet_spec.tools.export import export
    cfg = transformers.ResNetConfig(layer_type="bottleneck", depths=[1, 1], hidden_sizes=[16, 32], embedding_size=8,
                                    num_labels=3)
    torch.manual_seed(0)
    source = _randomise(transformers.ResNetForImageClassification(cfg))
    source.save_pretrained(tmp_path / "src")
    data = spec_data_from_hf_config(json.loads((tmp_path / "src" / "config.json").read_text()), "hf_net")
    (tmp_path / "hf_net.yaml").write_text(json.dumps(data))
    spec = load(tmp_path / "hf_net.yaml")
    model = build_model(spec).eval()
    fit_weights(model, read_weights(tmp_path / "src"))
    check = export(model, spec, "hf", tmp_path / "out", 32, 0)
    assert check.passed and "from_pretrained" in check.check
    back = transformers.ResNetForImageClassification.from_pretrained(tmp_path / "out").eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(back(x).logits, source(x).logits)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_net.yaml", "out", "src"]  # no temp folder left
    with pytest.raises(Exception, match="already exists"):
        export(model, spec, "hf", tmp_path / "out", 32, 0)


def test_hf_export_refuses_what_transformers_cannot_express(tmp_path):
    from resnet_spec.tools.export import export
    spec = load_spec("resnet50d")
    with pytest.raises(InputError, match="no transformers ResNet counterpart for: stem"):
        export(build_model(spec), spec, "hf", tmp_path / "out", 32, 0)
    assert not (tmp_path / "out").exists()


def test_load_model_from_a_checkpoint_a_run_folder_and_a_hf_folder(reference, tmp_path):
    import resnet_spec
    spec = load_spec("resnet18")
    ours = build_model(spec, num_classes=7).eval()
    ours.load_state_dict(reference.state_dict())
    from resnet_spec.spec.types import with_num_classes
    save_model(tmp_path / "m.pt", ours, with_num_classes(spec, 7))
    (tmp_path / "run").mkdir()
    save_model(tmp_path / "run" / "best.pt", ours, with_num_classes(spec, 7))
    for source in (tmp_path / "m.pt", tmp_path / "run"):
        model, got = resnet_spec.load_model(source)
        assert got.head is not None and got.head.num_classes == 7 and got.name == "resnet18"
        with torch.no_grad():
            assert torch.equal(model(X), reference(X))
    torch.save(reference.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(InputError, match="plain weights without a spec"):
        resnet_spec.load_model(tmp_path / "plain.pt")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ResNetConfig(layer_type="basic", depths=[1, 1], hidden_sizes=[8, 16], embedding_size=8,
                                    num_labels=2)
    hf = _randomise(transformers.ResNetForImageClassification(cfg))
    hf.save_pretrained(tmp_path / "hf")
    model, got = resnet_spec.load_model(tmp_path / "hf")
    with torch.no_grad():
        assert torch.equal(model(X), hf(X).logits)


def test_list_specs_names_every_shipped_spec():
    import resnet_spec
    from helpers import SPECS
    assert resnet_spec.list_specs() == sorted(p.stem for p in SPECS.glob("*.yaml"))


def test_import_hf_writes_a_spec_that_loads_the_weights(tmp_path):
    transformers = pytest.importorskip("transformers")
    from resnet_spec.spec.load import load_spec as load
    from resnet_spec.tools.import_hf import import_hf
    cfg = transformers.ResNetConfig(layer_type="bottleneck", depths=[2, 1], hidden_sizes=[32, 64], embedding_size=16,
                                    downsample_in_bottleneck=True, num_labels=5)
    hf = _randomise(transformers.ResNetForImageClassification(cfg))
    hf.save_pretrained(tmp_path / "resnet-tiny")
    data, text = import_hf(tmp_path / "resnet-tiny")
    assert data["name"] == "resnet_tiny" and data["block"]["stride_on"] == "1x1"
    (tmp_path / "tiny.yaml").write_text(text)
    model = build_model(load(tmp_path / "tiny.yaml")).eval()
    fit_weights(model, read_weights(tmp_path / "resnet-tiny"))
    with torch.no_grad():
        assert torch.equal(model(X), hf(X).logits)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "vit"}')
    with pytest.raises(InputError, match="a model of type 'vit'"):
        import_hf(tmp_path / "other")


def test_cli_import_hf_then_build_with_its_weights(tmp_path, cli):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ResNetConfig(layer_type="basic", depths=[1, 1], hidden_sizes=[8, 16], embedding_size=8,
                                    num_labels=3)
    transformers.ResNetForImageClassification(cfg).save_pretrained(tmp_path / "hf")
    code, out, err = cli(["import", f"hf:{tmp_path / 'hf'}", "--out", tmp_path / "hf.yaml"])
    assert code == 0 and "basic blocks [1, 1]" in out, err
    code, out, err = cli(["build", tmp_path / "hf.yaml", "--weights", tmp_path / "hf", "--input-size", 32])
    assert code == 0 and "output 1x3" in out, err
    assert "mapped the transformers ResNet keys" in err
    code, _, err = cli(["import", f"hf:{tmp_path / 'nothing'}"])
    assert code == 1 and "no such file" in err


def test_build_model_takes_weights_from_any_source_and_swaps_the_head(reference, tmp_path, caplog):
    """timm's create_model(name, pretrained=True, num_classes=N), with the weights given."""
    torch.save({"model": {"module." + k: v for k, v in reference.state_dict().items()}}, tmp_path / "ddp.pth")
    with caplog.at_level("INFO", logger="resnet_spec"):
        same = build_model("resnet18", num_classes=7, weights=tmp_path / "ddp.pth").eval()
    with torch.no_grad():
        assert torch.equal(same(X), reference(X))
    assert "stripped the 'module.' prefix" in caplog.text
    torch.manual_seed(0)
    swapped = build_model("resnet18", num_classes=10, weights=reference.state_dict())
    assert swapped.fc.out_features == 10
    assert torch.equal(swapped.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    assert "re-initialised: 7 classes in the weights, 10 in the model" in caplog.text
    with pytest.raises(RuntimeError, match="fc.weight"):  # no num_classes: the classes must fit
        build_model("resnet18", weights=reference.state_dict())
