"""Hostile and broken specs: nothing crashes, nothing runs, nothing is allocated before it is costed.

The corpus in tests/data/hostile holds one file per case and the exact error it must produce
(case.yaml, case.expected, and case.args when the command is not `validate case.yaml`). Inputs
too large to commit, and files that must be made in place (pipes, symlink loops), are made
here in tmp_path. Every case goes through the CLI: exit status, exact message, no traceback.
Checkpoints and failing writes are in test_hostile_files.py.
"""
from __future__ import annotations

import errno
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from helpers import DATA, TINY, no_traceback, run_isolated

HOSTILE = DATA / "hostile"
CASES = sorted(p.stem for p in HOSTILE.glob("*.expected"))


def _argv(case: str) -> list[str]:
    args = HOSTILE / f"{case}.args"
    return shlex.split(args.read_text()) if args.exists() else ["validate", f"{case}.yaml"]


def findings(out: str) -> str:
    """validate's stdout without its closing summary line (issue 15: findings go to stdout, as a linter's do)."""
    *lines, summary = out.splitlines(keepends=True)
    assert re.fullmatch(r"(\d+ errors? in \d+ files?( \(of \d+\))?|\d+ files? valid)(, \d+ warnings?)?\n", summary), out
    return "".join(lines)


# The committed corpus.

def test_corpus_is_complete():
    """Every case file has its expected error, and the corpus covers at least 60 cases."""
    inputs = {p.stem for p in HOSTILE.glob("*.yaml")}
    assert inputs == set(CASES)
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", CASES)
def test_corpus_case_gives_its_exact_error(cli, monkeypatch, case):
    monkeypatch.chdir(HOSTILE)
    argv = _argv(case)
    code, out, err = cli(argv)
    assert code == 1
    if argv[0] == "validate":
        assert err == ""
        out, err = "", findings(out)
    assert err == (HOSTILE / f"{case}.expected").read_text()
    assert err.strip(), "a refusal must say why"
    no_traceback(out, err)


# Every command that reads a spec refuses a corpus spec with the same records as `validate`.
SPEC_COMMANDS = {"build": ["build", "{f}", "--dry-run"], "diff": ["diff", "resnet18", "{f}"],
                 "export": ["export", "{f}", "--format", "state_dict", "--out", "never.pt"],
                 "compare": ["compare", "{f}", "--reference", "torchvision:resnet18"],
                 "train": ["train", "{f}", "--data", "no_such_folder"]}


@pytest.mark.parametrize("command", sorted(SPEC_COMMANDS))
def test_every_spec_command_refuses_the_corpus_alike(cli, monkeypatch, command):
    import importlib.util
    if importlib.util.find_spec(f"resnet_spec.cli.{command}") is None:
        pytest.skip(f"no `{command}` command in this tree")
    monkeypatch.chdir(HOSTILE)
    for case in CASES:
        if (HOSTILE / f"{case}.args").exists():
            continue
        code, out, err = cli([a.replace("{f}", f"{case}.yaml") for a in SPEC_COMMANDS[command]])
        # diff and compare say 1 for "differs", so a spec they cannot use is trouble: 2, as in diff(1).
        assert (code, err) == (2 if command in ("diff", "compare") else 1,
                               (HOSTILE / f"{case}.expected").read_text()), case
        no_traceback(out, err)
    assert not (HOSTILE / "never.pt").exists()


# YAML that tries to run code.

@pytest.mark.parametrize("command", ["validate", "build"])
def test_python_tag_runs_nothing(cli, monkeypatch, tmp_path, command):
    spec = tmp_path / "python_tag.yaml"
    spec.write_text((HOSTILE / "python_tag.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    code, out, err = cli([command, "python_tag.yaml"])
    assert code == 1 and "YAML tags" in (findings(out) if command == "validate" else err)
    assert not (tmp_path / "marker_python_tag").exists()
    # The payload is live: PyYAML's unsafe loader runs it. So the check above can fail.
    yaml.unsafe_load(spec.read_text())
    assert (tmp_path / "marker_python_tag").exists()


def test_alias_bomb_refused_in_bounded_time_and_memory(tmp_path):
    """20 levels of 9 aliases (9^20 strings if expanded), in a process capped at 1 GiB of address space."""
    lines = ["spec_version: 1", 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 21)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    # The validator alone (the CLI's parser setup may import torch, which maps more than 1 GiB);
    # the CLI's own output for a bomb is checked in the corpus (alias_bomb).
    r = run_isolated("import resource, sys\n"
                      "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
                      "from resnet_spec.api import validate\n"
                      "errors = validate('bomb.yaml')\n"
                      "print(*errors, sep='\\n', file=sys.stderr)\n"
                      "sys.exit(1 if errors else 0)", tmp_path, timeout=60)
    assert r.returncode == 1
    assert r.stderr == "bomb.yaml:3:10: $.l1: aliases (*l0) are not allowed; use `extends` to reuse a spec\n"


# Malformed structure made at test time.

@pytest.mark.parametrize("parser", ["CSafeLoader", "SafeLoader"])
@pytest.mark.parametrize("shape", ["flow_list", "flow_map", "block_list"])
def test_100000_levels_of_nesting(tmp_path, parser, shape):
    """No RecursionError, no segfault (the C composer crashes from about 25,000 levels), with either parser."""
    n = 100_000
    text = {"flow_list": "spec_version: 1\nx: " + "[" * n + "]" * n + "\n",
            "flow_map": "spec_version: 1\nx: " + "{a: " * n + "1" + "}" * n + "\n",
            "block_list": "spec_version: 1\nx:\n" + "- " * n + "1\n"}[shape]
    (tmp_path / "deep.yaml").write_text(text)
    r = run_isolated("import sys, yaml\n"
                      "from resnet_spec.spec import yamlio\n"
                      f"yamlio._Parser = getattr(yaml, {parser!r})\n"
                      "from resnet_spec.cli.main import main\n"
                      "sys.exit(main(['validate', 'deep.yaml']))", tmp_path)
    assert r.returncode == 1, r.stderr  # a segfault would be -11
    assert re.fullmatch(r"deep\.yaml:\d+:\d+: (\$[.\w\[\]]*: )?nesting deeper than 32 levels; a spec needs a handful\n",
                        findings(r.stdout)), r.stdout


def test_50_mb_file_is_refused_by_the_size_cap(cli, monkeypatch, tmp_path):
    with (tmp_path / "big.yaml").open("w") as f:
        f.write("spec_version: 1\nstages: [{channels: 8, blocks: 1}]\n")
        line = "# padding " + "x" * 90 + "\n"
        for _ in range(50 * 10_000):
            f.write(line)
    assert (tmp_path / "big.yaml").stat().st_size > 50_000_000
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["validate", "big.yaml"])
    assert code == 1 and err == ""
    assert findings(out) == "big.yaml: file is larger than the 1,048,576-byte (1 MiB) limit for a spec\n"


def test_too_many_values_is_refused(cli, monkeypatch, tmp_path):
    """Under the size cap, 12,000 values would make the schema walk and the error list long."""
    (tmp_path / "wide.yaml").write_text("spec_version: 1\nstages: [" + "{}, " * 12_000 + "]\n")
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(["validate", "wide.yaml"])
    err = findings(out)
    assert code == 1
    assert err == "wide.yaml:2:39990: more than 10,000 keys and values; a spec holds a few hundred\n"


def test_directory_missing_and_overlong_names(cli, monkeypatch, tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["validate", "dir.yaml"])
    assert (code, err, findings(out)) == (1, "", "dir.yaml: is a directory, not a spec file\n")
    code, out, err = cli(["validate", "missing.yaml"])
    assert (code, err, findings(out)) == (1, "", "missing.yaml: no such file\n")
    long = "a" * 5000 + ".yaml"
    code, out, _ = cli(["validate", long])
    err = findings(out)
    assert code == 1 and err == f"{long}: cannot read: File name too long\n"


def test_a_pipe_is_refused_without_blocking(cli, monkeypatch, tmp_path):
    os.mkfifo(tmp_path / "pipe.yaml")  # opening it for reading would wait for a writer forever
    (tmp_path / "via.yaml").write_text("spec_version: 1\nextends: pipe.yaml\n")
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(["validate", "pipe.yaml"])
    err = findings(out)
    assert code == 1 and err == "pipe.yaml: is not a regular file (a pipe, socket or device), not a spec file\n"
    code, out, _ = cli(["validate", "via.yaml"])
    err = findings(out)
    assert code == 1 and err == "pipe.yaml: is not a regular file (a pipe, socket or device), not a spec file\n"


def test_a_symlink_loop_is_refused(cli, monkeypatch, tmp_path):
    (tmp_path / "loop.yaml").symlink_to("loop.yaml")
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(["validate", "loop.yaml"])
    err = findings(out)
    assert code == 1 and err == "loop.yaml: cannot read: Too many levels of symbolic links\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file; the next test covers the message")
def test_unreadable_file(cli, monkeypatch, tmp_path):
    (tmp_path / "secret.yaml").write_text("spec_version: 1\n")
    (tmp_path / "secret.yaml").chmod(0)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["validate", "secret.yaml"])
    assert (code, err, findings(out)) == (1, "", "secret.yaml: cannot read: Permission denied\n")


def test_unreadable_file_as_any_user(cli, monkeypatch, tmp_path):
    """Tests run as root here, where chmod 000 does not stop a read: make the open fail instead."""
    (tmp_path / "secret.yaml").write_text("spec_version: 1\n")
    real_open = Path.open

    def refuse(self, *args, **kwargs):
        if self.name == "secret.yaml":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_open(self, *args, **kwargs)
    monkeypatch.setattr(Path, "open", refuse)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["validate", "secret.yaml"])
    assert (code, err, findings(out)) == (1, "", "secret.yaml: cannot read: Permission denied\n")


def test_extends_chain_of_the_documented_limit_is_accepted(cli, monkeypatch):
    """8 files (parts/chain1 .. chain8) load; extends_too_deep.yaml adds a ninth and is refused."""
    monkeypatch.chdir(HOSTILE)
    code, out, err = cli(["validate", "parts/chain1.yaml"])
    assert (code, err, findings(out)) == (0, "", "parts/chain1.yaml: ok\n")


# Absurd sizes: refused before anything is allocated.

def test_cost_caps_refuse_before_building(cli, monkeypatch):
    """Without --dry-run the same refusal comes before the build (the model would need about 40 PB)."""
    monkeypatch.chdir(HOSTILE)
    code, out, err = cli(["build", "cost_params.yaml"])
    assert code == 1 and out == "" and err == (HOSTILE / "cost_params.expected").read_text()


def test_cost_caps_are_flags(cli, monkeypatch, tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    monkeypatch.chdir(tmp_path)
    from resnet_spec.model.factory import build_model
    params = sum(p.numel() for p in build_model("tiny.yaml").parameters())  # counted on a real model
    code, out, _ = cli(["build", "tiny.yaml", "--dry-run", "--max-params", params])
    assert code == 0 and f"{params:,} parameters" in out
    code, _, err = cli(["build", "tiny.yaml", "--max-params", params - 1])
    assert code == 1 and err == (f"resnet-spec build: error: tiny: {params:,} parameters, more than the cap of "
                                 f"{params - 1:,} (--max-params raises it)\n")
    code, _, err = cli(["build", "tiny.yaml", "--batch", 10**12])
    assert code == 1 and err == ("resnet-spec build: error: tiny: the 1000000000000x3x16x16 input alone needs "
                                 "2,929,687,500.0 MB, more than the cap of 16,384 MB (--max-activation-mb raises it)\n")
    code, _, err = cli(["build", "tiny.yaml", "--max-blocks", 0])
    assert code == 2 and err.splitlines()[-1] == ("resnet-spec build: error: argument --max-blocks:"
                                                  " must be at least 1, got 0")


def test_build_model_applies_the_caps():
    from resnet_spec.model.factory import build_model
    from resnet_spec.model.limits import LimitError
    with pytest.raises(LimitError, match=r"cost_params: 10,414,587,288,487,120 parameters"):
        build_model(HOSTILE / "cost_params.yaml")


# Specs the fuzzer (tests/test_fuzz.py) found crashing the build. Each must be refused with records.

FUZZ_FINDS = {
    "no_stages": "spec_version: 1\n",  # KeyError 'stages': the schema does not require it
    "duplicate_override_index": ("spec_version: 1\nstages:\n  - channels: 8\n    blocks: 1\n    overrides:\n"
                                 "      - {index: 0, block: {}}\n      - {index: 0, block: {act_before_add: true}}\n"),
    "deep_tiered_stem_width_3": ("spec_version: 1\nstem: {type: deep_tiered, width: 3}\n"
                                 "stages: [{channels: 8, blocks: 1}]\n"),
    "stride_3_conv_shortcut": "spec_version: 1\nstages: [{channels: 8, blocks: 1, stride: 3}]\n",
    # OverflowError: ECA's kernel size int(|log2(c) + beta| / gamma) is infinite for the smallest positive gamma
    "eca_gamma_tiny": ("spec_version: 1\nblock: {attention: {type: eca, gamma: 5.0e-324}}\n"
                       "stages: [{channels: 8, blocks: 1}]\n"),
}


@pytest.mark.parametrize("name", sorted(FUZZ_FINDS))
def test_fuzz_finds_are_refused_not_crashed(cli, tmp_path, monkeypatch, name):
    (tmp_path / f"{name}.yaml").write_text(FUZZ_FINDS[name])
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["build", f"{name}.yaml", "--dry-run"])
    assert code == 1
    assert err and all(line.startswith(f"{name}.yaml:") for line in err.splitlines()), err
    no_traceback(out, err)


def test_windows_files_are_accepted(cli, monkeypatch, tmp_path):
    """Not hostile, only foreign: a UTF-8 byte-order mark and CRLF line endings load as usual."""
    (tmp_path / "win.yaml").write_bytes(b"\xef\xbb\xbfspec_version: 1\r\nstages: [{channels: 8, blocks: 1}]\r\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["validate", "win.yaml"])
    assert (code, err, findings(out)) == (0, "", "win.yaml: ok\n")
