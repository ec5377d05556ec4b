"""CLI tier, issue 15: one exit-code contract, checks before work, linter-style validate, diff's defaults."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from helpers import DATA, ROOT, SPECS, TINY, no_traceback

SEED_OVER = str(2**64)
FEATURES = "spec_version: 1\nextends: resnet18\nfeatures: [1, 2, 3, 4]\n"


# The contract: 0 ok, 1 invalid input or "differs", 2 usage or trouble for diff/compare, 3 a bug.

def test_help_states_the_exit_code_contract(cli):
    code, out, _ = cli(["--help"])
    assert code == 0
    for line in ("exit status, for every command:", "0  ok", "1  invalid input", "2  bad usage", "3  a bug"):
        assert line in out, line


@pytest.mark.parametrize("argv", [
    ["build", "resnet18", "--bogus"],
    ["validate", "resnet18", "--bogus", "x"],
    ["diff", "resnet18", "resnet34", "--nope"],
])
def test_usage_errors_carry_the_subcommand_name(cli, argv):
    code, out, err = cli(argv)
    assert code == 2 and out == ""
    assert err.splitlines()[-1].startswith(f"resnet-spec {argv[0]}: error: unrecognized arguments: ")


@pytest.mark.parametrize("argv", [
    ["build", "resnet18", "--seed", SEED_OVER],
    ["build", "resnet18", "--seed", "-1"],
    ["export", "resnet18", "--format", "state_dict", "--out", "x.pt", "--seed", SEED_OVER],
    ["compare", "resnet18", "--reference", "torchvision:resnet18", "--seed", SEED_OVER],
    ["train", "resnet18", "--data", "d", "--seed", SEED_OVER],
    ["train", "resnet18", "--data", "d", "--lr", "-1"],
    ["train", "resnet18", "--data", "d", "--lr", "nan"],
    ["train", "resnet18", "--data", "d", "--lr", "inf"],
    ["train", "resnet18", "--data", "d", "--epochs", "0"],
    ["train", "resnet18", "--data", "d", "--min-scale", "0"],
    ["train", "resnet18", "--data", "d", "--label-smoothing", "1"],
    ["train", "resnet18", "--data", "d", "--workers", "-1"],
    ["build", "resnet18", "--device", "tpu", "--dry-run"],
    ["train", "resnet18", "--data", "d", "--device", "tpu"],
    ["predict", "x.pt", "y.png", "--device", "tpu"],
    ["bench", "resnet18", "--device", "abc"],  # found by the property test at 10x: it was exit 3
    ["build", "resnet18", "--input-size", "abc"],
])
def test_out_of_range_values_are_usage_errors(cli, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(argv)
    assert code == 2, err
    assert out == "" and f"resnet-spec {argv[0]}: error: argument " in err
    no_traceback(out, err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is there")
def test_cuda_without_cuda_is_refused_before_the_table(cli):
    for command in ("build", "bench"):
        code, out, err = cli([command, "resnet18", "--device", "cuda"])
        assert (code, out) == (2, "") and "no CUDA device is available" in err, command


def test_warmup_must_leave_epochs_to_train(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY)
    code, out, err = cli(["train", "tiny.yaml", "--data", "nowhere", "--warmup", "5", "--epochs", "1"])
    assert code == 2 and "argument --warmup" in err
    assert not (tmp_path / "runs").exists()


# Checks before work: nothing is printed and nothing is built when a flag is wrong.

def test_weights_are_checked_even_on_a_dry_run(cli, tmp_path):
    code, out, err = cli(["build", "resnet18", "--dry-run", "--weights", tmp_path / "absent.pt"])
    assert code == 1 and out == "" and "absent.pt: no such file" in err
    code, out, err = cli(["build", "resnet18", "--dry-run", "--weights", tmp_path])
    assert code == 1 and out == "" and "neither a train run" in err  # a folder may be a run or an HF model


def test_num_classes_on_a_features_spec_is_refused(cli, tmp_path):
    (tmp_path / "feat.yaml").write_text(FEATURES)
    for argv in (["build", tmp_path / "feat.yaml", "--num-classes", "10", "--dry-run"],
                 ["export", tmp_path / "feat.yaml", "--format", "state_dict", "--out", tmp_path / "o.pt",
                  "--num-classes", "10"]):
        code, out, err = cli(argv)
        assert code == 1 and out == "" and "--num-classes 10: spec 'feat' returns feature maps" in err
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.parametrize("argv", [
    ["build", "resnetaa50d", "--input-size", "36"],
    ["build", "resnetaa50d", "--input-size", "36", "--dry-run"],
    ["export", "resnetaa50d", "--format", "state_dict", "--out", "aa.pt", "--input-size", "36"],
])
def test_command_line_sizes_meet_the_odd_map_rule(cli, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(argv)
    assert code == 1 and out == ""
    assert "--input-size 36: with anti_alias: avg, stages[1] gets a 9px map" in err
    assert not (tmp_path / "aa.pt").exists()


def test_train_image_size_meets_the_odd_map_rule_before_any_folder(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "aa.yaml").write_text(TINY.replace("spec_version: 1\n", "spec_version: 1\nanti_alias: avg\n"))
    code, out, err = cli(["train", "aa.yaml", "--data", "nowhere", "--image-size", "17", "--out", "run"])
    assert code == 1 and "--image-size 17: with anti_alias: avg" in err
    assert not (tmp_path / "run").exists()


def test_a_failed_run_leaves_no_run_folder(cli, tmp_path, monkeypatch):
    """Every image unreadable: the run fails in its first epoch, and the folder it made goes with it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY)
    for split in ("train", "val"):
        for cls in ("a", "b", "c"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            (tmp_path / "data" / split / cls / "x.png").write_bytes(b"not a png")
    code, _, err = cli(["train", "tiny.yaml", "--data", "data", "--out", "run", "--epochs", "1", "--workers", "0",
                        "--device", "cpu", "--image-size", "16", "--cache", "off"])
    assert code == 1, err
    assert not (tmp_path / "run").exists()


# diff: 1 means "differs", 2 "trouble"; name and description are labels, compared only on request.

def test_diff_ignores_name_and_description_unless_asked(cli, tmp_path):
    copy = tmp_path / "copy.yaml"
    copy.write_text("spec_version: 1\nextends: resnet18\nname: my_copy\ndescription: another label\n")
    code, out, _ = cli(["diff", "resnet18", copy])
    assert code == 0 and "no field differs" in out
    code, out, _ = cli(["diff", "resnet18", copy, "--all", "--format", "json"])
    assert code == 1
    assert [f["path"] for f in json.loads(out)["fields"]] == ["$.name", "$.description"]


def test_diff_trouble_is_2(cli, tmp_path):
    code, _, err = cli(["diff", "resnet18", tmp_path / "absent.yaml"])
    assert code == 2 and "no such file" in err


# validate, as a linter: findings and a summary on stdout, warnings that do not fail, $schema allowed.

def test_validate_writes_findings_and_a_summary_to_stdout(cli, monkeypatch):
    monkeypatch.chdir(DATA / "invalid")
    code, out, err = cli(["validate", "zero_blocks.yaml", SPECS / "resnet18.yaml"])
    assert code == 1 and err == ""
    assert out.splitlines() == ["zero_blocks.yaml:3:28: $.stages[0].blocks: 0 is less than the minimum of 1",
                                f"{SPECS / 'resnet18.yaml'}: ok", "1 error in 1 file (of 2)"]


def test_validate_reports_schema_and_rule_errors_together(cli, monkeypatch):
    monkeypatch.chdir(DATA / "invalid")
    code, out, _ = cli(["validate", "every_mistake_at_once.yaml"])
    lines = out.splitlines()
    assert code == 1 and lines[-1] == "4 errors in 1 file"
    assert [line.split(": ")[1] for line in lines[:-1]] == [
        "$.norm.groups", "$.stages[0].stride", "$.stages[1].dilation", "$.stages[2].overrides[0].index"]


def test_validate_warns_over_builds_caps_without_failing(cli, tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("spec_version: 1\nextends: resnet50\nblock: {groups: 1000}\n")
    code, out, _ = cli(["validate", big])
    assert code == 0
    assert "warning: at least 20,681,435,304 parameters, more than build's default cap of 1,000,000,000" in out
    assert out.splitlines()[-1] == "1 file valid, 1 warning"
    code, out, _ = cli(["validate", big, "--format", "json"])
    report = json.loads(out)[str(big)]
    assert code == 0 and report["valid"] and len(report["warnings"]) == 1
    code, _, err = cli(["build", big, "--dry-run", "--max-params", "1000000000"])
    assert code == 0  # a dry run costs it; the build itself is refused
    code, _, err = cli(["build", big])
    assert code == 1 and "--max-params raises it" in err


def test_validate_accepts_a_schema_key(cli, tmp_path):
    spec = tmp_path / "mine.yaml"
    spec.write_text(f"# yaml-language-server: $schema={ROOT / 'schemas' / 'resnet-spec.schema.json'}\n"
                    "$schema: https://resnet-spec.dev/schemas/resnet-spec.schema.json\n"
                    "spec_version: 1\nextends: resnet18\n")
    assert cli(["validate", spec]) == (0, f"{spec}: ok\n1 file valid\n", "")


def test_validate_never_imports_torch(tmp_path):
    code = ("import sys\nfrom resnet_spec.cli.main import main\nmain(['validate', 'resnet50'])\n"
            "assert 'torch' not in sys.modules, 'validate imported torch'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr


# The digits writer is a small command of its own.

def test_digits_module_has_help_and_refuses_a_missing_parent(tmp_path):
    run = [sys.executable, "-m", "resnet_spec.train.digits"]
    r = subprocess.run([*run, "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("usage:")
    assert not (tmp_path / "--help").exists()
    r = subprocess.run([*run, str(tmp_path / "no" / "such" / "digits")], capture_output=True, text=True)
    assert r.returncode == 1 and "does not exist" in r.stderr
    assert not (tmp_path / "no").exists()


def test_list_and_build_speak_json(cli):
    import json

    import resnet_spec
    code, out, _ = cli(["list", "--format", "json"])
    assert code == 0 and [r["name"] for r in json.loads(out)] == resnet_spec.list_specs()
    code, out, err = cli(["build", "resnet18", "--format", "json", "--input-size", "64"])
    assert code == 0, err
    report = json.loads(out)
    assert report["params"] == 11_689_512 and report["forward"]["outputs"] == [[1, 1000]]
    assert [r["name"] for r in report["rows"]] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    code, out, _ = cli(["build", "resnet18", "--format", "json", "--dry-run"])
    assert code == 0 and "forward" not in json.loads(out)
