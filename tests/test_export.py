"""export: each format written atomically, read back here independently, and compared with the torch model."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from helpers import cli_choices
from resnet_spec.model.factory import build_model

SPEC = "resnet10"
SIZE = 32


def _seeded(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(SPEC).eval()


def _export(cli, tmp_path, fmt: str, *extra: str) -> tuple[int, str, str, object]:
    out = tmp_path / f"model.{fmt}"
    code, stdout, stderr = cli(["export", SPEC, "--format", fmt, "--out", out, "--input-size", SIZE, *extra])
    return code, stdout, stderr, out


def test_state_dict(cli, tmp_path):
    code, out, err, path = _export(cli, tmp_path, "state_dict")
    assert code == 0, err
    assert "checked: every tensor read back" in out
    loaded = torch.load(path, weights_only=True)
    want = _seeded().state_dict()
    assert loaded.keys() == want.keys() and all(torch.equal(loaded[k], want[k]) for k in want)


def test_safetensors_with_spec_metadata(cli, tmp_path):
    safe_open = pytest.importorskip("safetensors").safe_open
    code, _, err, path = _export(cli, tmp_path, "safetensors")
    assert code == 0, err
    want = _seeded().state_dict()
    with safe_open(str(path), framework="pt") as f:
        assert [s["blocks"] for s in json.loads(f.metadata()["spec"])["stages"]] == [1, 1, 1, 1]
        assert set(f.keys()) == set(want)
        assert all(torch.equal(f.get_tensor(k), want[k]) for k in want)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript(cli, tmp_path):
    code, out, err, path = _export(cli, tmp_path, "torchscript")
    assert code == 0, err
    assert "max rel diff" in out
    loaded = torch.jit.load(str(path))
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), _seeded()(x), rtol=0, atol=0)


def test_onnx_runs_in_onnxruntime_at_another_batch_size(cli, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    code, out, err, path = _export(cli, tmp_path, "onnx")
    assert code == 0, err
    assert "onnxruntime vs torch at batch 2 and 3" in out
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)  # a named, dynamic batch axis
    x = torch.randn(5, 3, SIZE, SIZE)
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = _seeded()(x)
    # onnxruntime fuses conv + BN and sums in another order: float32 rounding, well under 1e-4 of the scale.
    assert (torch.from_numpy(got) - want).abs().max() <= 1e-4 * want.abs().max()


def test_weights_from_a_checkpoint(cli, tmp_path):
    ckpt = tmp_path / "r10.pt"
    assert cli(["build", SPEC, "--input-size", SIZE, "--seed", "7", "--out", ckpt])[0] == 0
    code, _, err, path = _export(cli, tmp_path, "state_dict", "--weights", str(ckpt))
    assert code == 0, err
    want = torch.load(ckpt, weights_only=True)["state_dict"]
    got = torch.load(path, weights_only=True)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert not all(torch.equal(got[k], v) for k, v in _seeded(0).state_dict().items())


def test_weights_from_a_plain_torchvision_state_dict(cli, tmp_path):
    pytest.importorskip("safetensors")
    import torchvision
    sd = tmp_path / "tv18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), sd)
    out = tmp_path / "r18.safetensors"
    code, _, err = cli(["export", "resnet18", "--format", "safetensors", "--out", out, "--weights", sd])
    assert code == 0, err


def test_weights_that_do_not_match_show_the_key_diff(cli, tmp_path):
    import torchvision
    sd = tmp_path / "tv34.pt"
    torch.save(torchvision.models.resnet34().state_dict(), sd)
    code, out, err, path = _export(cli, tmp_path, "state_dict", "--weights", str(sd))
    assert code == 1 and not path.exists()
    assert "weights do not match the spec" in err
    assert "layer1.1.conv1.weight" in err and "missing" in err  # resnet10 has one block per stage


def test_bad_weights_file(cli, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, _, err, _ = _export(cli, tmp_path, "state_dict", "--weights", str(bad))
    assert code == 1 and str(bad) in err and len(err.strip().splitlines()) == 1


def test_without_onnxruntime_says_how_to_install(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code, _, err, path = _export(cli, tmp_path, "onnx")
    assert code == 1 and 'pip install "resnet-spec[export]"' in err
    assert not path.exists()


def test_failed_check_leaves_the_old_file(cli, tmp_path, monkeypatch):
    from resnet_spec.tools import export
    monkeypatch.setitem(export.TOLERANCE, "torchscript", -1.0)  # no result can pass
    path = tmp_path / "model.torchscript"
    path.write_text("old")
    code, _, err, _ = _export(cli, tmp_path, "torchscript")
    assert code == 1 and "export check failed" in err
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.torchscript"]  # no temp file left


def test_bad_output_and_format(cli, tmp_path):
    code, _, err = cli(["export", SPEC, "--format", "onnx", "--out", tmp_path / "no" / "m.onnx"])
    assert code == 1 and "does not exist" in err
    assert cli(["export", SPEC, "--format", "keras", "--out", tmp_path / "m"])[0] == 2


def test_an_exporter_failure_is_one_line(cli, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("protobuf: message too large\nmore detail")
    monkeypatch.setattr(torch.onnx, "export", broken)
    pytest.importorskip("onnxruntime")
    code, out, err, path = _export(cli, tmp_path, "onnx")
    assert code == 1 and not path.exists()
    assert err.strip().splitlines()[-1] == (f"resnet-spec export: error: onnx export failed, {path} not written: "
                           "RuntimeError: protobuf: message too large")


def test_cli_format_choices_are_the_exporters():
    from resnet_spec.cli import export as command
    from resnet_spec.tools import export
    assert command.FORMATS == export.FORMATS


def test_cli_format_choices_are_the_exporters_table():
    from resnet_spec.tools.export import EXPORTERS
    assert cli_choices("export", "--format") == tuple(EXPORTERS)
    assert set(EXPORTERS) == {"torchscript", "pt2", "onnx", "safetensors", "state_dict", "hf"}


def test_an_unknown_format_is_refused_before_anything_is_written(tmp_path):
    from resnet_spec.api import load_spec
    from resnet_spec.tools.export import export
    out = tmp_path / "m.keras"
    with pytest.raises(ValueError, match="unknown export format 'keras'; known: hf, onnx, pt2, safetensors, "
                                         "state_dict, torchscript"):
        export(_seeded(), load_spec(SPEC), "keras", out, SIZE, 0)
    assert not out.exists()


def test_pt2_program_reads_back_with_a_dynamic_batch(tmp_path):
    import torch

    from resnet_spec.api import load_spec
    from resnet_spec.tools.export import export
    model, path = _seeded(), tmp_path / "m.pt2"
    check = export(model, load_spec(SPEC), "pt2", path, SIZE, 0)
    assert check.passed and "batch axis dynamic" in check.check
    program = torch.export.load(str(path))
    x = torch.randn(5, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model(x), rtol=0, atol=1e-5)


def test_onnx_height_and_width_are_dynamic_unless_static(tmp_path):
    import onnx

    from resnet_spec.api import load_spec
    from resnet_spec.tools.export import export
    spec = load_spec(SPEC)
    check = export(_seeded(), spec, "onnx", tmp_path / "d.onnx", SIZE, 0)
    assert f"run at {SIZE} and {2 * SIZE} px" in check.check
    dims = onnx.load(str(tmp_path / "d.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
    export(_seeded(), spec, "onnx", tmp_path / "s.onnx", SIZE, 0, static_shape=True)
    dims = onnx.load(str(tmp_path / "s.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, SIZE, SIZE]


def test_a_format_that_contradicts_the_file_name_is_refused(tmp_path):
    from resnet_spec.api import load_spec
    from resnet_spec.errors import InputError
    from resnet_spec.tools.export import export, format_for
    assert [format_for(n) for n in ("a.onnx", "a.pt2", "a.ts", "a.safetensors", "a.pt", "folder", "a.bin")] == \
        ["onnx", "pt2", "torchscript", "safetensors", "state_dict", "hf", None]
    with pytest.raises(InputError, match="the name says torchscript but the format asked for is onnx"):
        export(_seeded(), load_spec(SPEC), "onnx", tmp_path / "x.ts", SIZE, 0)
    assert not (tmp_path / "x.ts").exists()


@pytest.mark.parametrize(("fmt", "name"), [("safetensors", "h.safetensors"), ("torchscript", "h.ts"),
                                           ("pt2", "h.pt2")])
def test_half_precision_exports_carry_the_dtype(tmp_path, fmt, name):
    import torch

    from resnet_spec.api import load_spec
    from resnet_spec.errors import InputError
    from resnet_spec.tools.export import export
    check = export(_seeded(), load_spec(SPEC), fmt, tmp_path / name, SIZE, 0, dtype="bfloat16")
    assert check.passed and check.tolerance == (0.0 if fmt == "safetensors" else 5e-2)  # tensors stay exact
    if fmt == "safetensors":
        from safetensors.torch import load_file
        assert {t.dtype for t in load_file(str(tmp_path / name)).values() if t.is_floating_point()} == {torch.bfloat16}
    with pytest.raises(InputError, match="onnx is exported in float32 only"):
        export(_seeded(), load_spec(SPEC), "onnx", tmp_path / "h.onnx", SIZE, 0, dtype="float16")


def test_cli_format_from_the_name_and_contradictions(cli, tmp_path):
    code, out, err = cli(["export", SPEC, "--out", tmp_path / "m.onnx", "--input-size", SIZE])
    assert code == 0 and "(onnx," in out, err
    code, _, err = cli(["export", SPEC, "--format", "onnx", "--out", tmp_path / "x.ts", "--input-size", SIZE])
    assert code == 1 and "the name says torchscript but the format asked for is onnx" in err
    assert not (tmp_path / "x.ts").exists()
    code, _, err = cli(["export", SPEC, "--out", tmp_path / "m.bin"])
    assert code == 2 and "give --format" in err
    code, _, err = cli(["export", SPEC, "--format", "onnx", "--out", tmp_path / "h.onnx", "--dtype", "float16"])
    assert code == 1 and "--dtype float16: onnx is exported in float32 only" in err


def test_cli_export_from_a_checkpoint_alone_and_a_checkpoint_of_another_spec(cli, tmp_path):
    ckpt = tmp_path / "r10.pt"
    assert cli(["build", SPEC, "--input-size", SIZE, "--num-classes", "7", "--out", ckpt])[0] == 0
    code, out, err = cli(["export", "--weights", ckpt, "--out", tmp_path / "m.pt2", "--input-size", SIZE])
    assert code == 0 and "(pt2," in out, err
    code, _, err = cli(["export", "resnet18", "--weights", ckpt, "--out", tmp_path / "o.pt"])
    assert code == 1 and "saved from spec 'resnet10', which differs from 'resnet18'" in err
    assert "--ignore-spec loads it anyway" in err
    code, _, err = cli(["export", "--out", tmp_path / "o.pt"])
    assert code == 2 and "give a SPEC, or --weights" in err
