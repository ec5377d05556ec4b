"""CLI tier: commands through main([...]), their exit codes and output."""
from __future__ import annotations

import json

import torch

from helpers import DATA, SPECS
from resnet_spec.model.checkpoint import load_file, spec_from_checkpoint


def test_validate_ok_and_invalid(cli, monkeypatch):
    code, out, err = cli(["validate", SPECS / "resnet18.yaml", SPECS / "resnet50.yaml"])
    assert code == 0 and out.count(": ok") == 2 and err == ""
    assert out.splitlines()[-1] == "2 files valid"
    monkeypatch.chdir(DATA / "invalid")
    code, out, err = cli(["validate", "bad_enum.yaml", "zero_blocks.yaml"])
    assert code == 1 and err == ""  # findings go to stdout, as a linter's do (issue 15)
    assert out.splitlines() == [
        "bad_enum.yaml:2:15: $.block.type: 'bottlenek' is not one of 'basic', 'bottleneck'; did you mean 'bottleneck'?",
        "zero_blocks.yaml:3:28: $.stages[0].blocks: 0 is less than the minimum of 1",
        "2 errors in 2 files"]
    assert "Traceback" not in err


def test_validate_json(cli, monkeypatch):
    monkeypatch.chdir(DATA / "invalid")
    code, out, _ = cli(["validate", "--format", "json", "zero_blocks.yaml"])
    assert code == 1
    report = json.loads(out)["zero_blocks.yaml"]
    assert report["valid"] is False
    assert report["errors"][0] == {"file": "zero_blocks.yaml", "line": 3, "column": 28,
                                   "path": "$.stages[0].blocks", "message": "0 is less than the minimum of 1"}


def test_build_prints_table_and_runs_forward(cli):
    code, out, err = cli(["build", SPECS / "resnet34.yaml", "--input-size", "64", "--batch", "2"])
    assert code == 0, err
    lines = out.splitlines()
    for part in ("stem", "layer1", "layer2", "layer3", "layer4", "head", "total"):
        assert any(line.startswith(part) for line in lines), part
    assert "21,797,672 parameters" in out
    assert "output 2x1000" in out


def test_build_by_name_with_num_classes_and_out(cli, tmp_path):
    out_file = tmp_path / "m.pt"
    code, out, err = cli(["build", "resnet18", "--num-classes", "7", "--input-size", "32", "--out", out_file])
    assert code == 0, err
    obj = load_file(out_file)
    spec = spec_from_checkpoint(obj, out_file)
    assert spec.head.num_classes == 7 and obj["state_dict"]["fc.weight"].shape == (7, 512)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind


def test_build_dry_run_allocates_nothing(cli):
    code, out, _ = cli(["build", "resnet152", "--dry-run", "--verbose"])
    assert code == 0 and "layer3.35" in out and "forward pass" not in out


def test_bad_usage_exits_2_and_bad_input_exits_1(cli, tmp_path):
    assert cli(["build"])[0] == 2
    assert cli(["frobnicate"])[0] == 2
    assert cli([])[0] == 2
    code, _, err = cli(["build", "resnet18", "--batch", "0"])
    assert code == 2 and err.splitlines()[-1] == "resnet-spec build: error: argument --batch: must be at least 1, got 0"
    code, _, err = cli(["build", "resnet18", "--out", tmp_path / "missing" / "m.pt"])
    assert code == 1 and "does not exist" in err
    # Issue 15: a device that does not exist, or is not there, is bad usage (2), found before the table.
    code, out, err = cli(["build", "resnet18", "--device", "tpu"])
    assert code == 2 and out == "" and "resnet-spec build: error: argument --device" in err and "Traceback" not in err
    if not torch.cuda.is_available():
        code, out, err = cli(["build", "resnet18", "--device", "cuda", "--input-size", "32"])
        assert code == 2 and out == "" and "no CUDA device" in err
    code, _, err = cli(["build", "resnt34"])
    assert code == 1 and err.strip() == ("resnt34: no such file, and no shipped spec by that name;"
                                         " did you mean 'resnet34'?")


def test_list_and_schema(cli):
    code, out, _ = cli(["list"])
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("resnet50 "))
    assert "25,557,032" in row and "4.089" in row
    code, out, _ = cli(["schema"])
    assert code == 0 and json.loads(out)["title"] == "resnet-spec"


def test_every_command_has_help_with_examples(cli):
    from resnet_spec.cli.main import make_parser
    sub = next(a for a in make_parser()._actions if a.dest == "command")
    for name in sub.choices:
        code, out, _ = cli([name, "--help"])
        assert code == 0 and "examples:" in out, name


def test_a_bug_is_one_line_with_exit_3_and_the_traceback_on_request(cli, monkeypatch):
    import resnet_spec.cli.schema as schema_cmd

    def broken(args):
        raise ZeroDivisionError("boom")
    monkeypatch.setattr(schema_cmd, "run", broken)
    code, _, err = cli(["schema"])
    assert code == 3 and "Traceback" not in err
    assert err.splitlines()[0] == "resnet-spec schema: internal error: ZeroDivisionError: boom"
    monkeypatch.setenv("RESNET_SPEC_DEBUG", "1")
    import pytest
    with pytest.raises(ZeroDivisionError):
        cli(["schema"])
