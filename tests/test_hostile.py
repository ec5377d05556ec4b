"""Hostile and broken input: nothing crashes, nothing runs, nothing is lost.

The corpus in tests/data/hostile holds one file per case and the exact error it must produce
(case.yaml, case.expected, and case.args when the command is not `validate case.yaml`). Inputs
too large to commit, and files that must be made in place (pipes, pickles, checkpoints), are made
here in tmp_path. Every case goes through the CLI: exit status, exact message, no traceback.
"""
from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import DATA, ROOT

HOSTILE = DATA / "hostile"
CASES = sorted(p.stem for p in HOSTILE.glob("*.expected"))
TINY = ("# A tiny net for the checkpoint and output cases.\nspec_version: 1\ninput: {size: 16}\n"
        "stem: {type: cifar, width: 4}\nstages: [{channels: 4, blocks: 1}, {channels: 8, blocks: 1, stride: 2}]\n"
        "head: {num_classes: 3}\n")


def _argv(case: str) -> list[str]:
    args = HOSTILE / f"{case}.args"
    return shlex.split(args.read_text()) if args.exists() else ["validate", f"{case}.yaml"]


def _run_isolated(code: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """Python code in a fresh process: a crash (segfault, memory) there cannot take the test run with it."""
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _no_traceback(*texts: str) -> None:
    for t in texts:
        assert "Traceback" not in t and not re.search(r"^\w+(Error|Exception):", t, re.M), t


# The committed corpus.

def test_corpus_is_complete():
    """Every case file has its expected error, and the corpus covers at least 60 cases."""
    inputs = {p.stem for p in HOSTILE.glob("*.yaml")}
    assert inputs == set(CASES)
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", CASES)
def test_corpus_case_gives_its_exact_error(cli, monkeypatch, case):
    monkeypatch.chdir(HOSTILE)
    code, out, err = cli(_argv(case))
    assert code == 1
    assert err == (HOSTILE / f"{case}.expected").read_text()
    assert err.strip(), "a refusal must say why"
    _no_traceback(out, err)


# Every command that reads a spec refuses a corpus spec with the same records as `validate`.
SPEC_COMMANDS = {"build": ["build", "{f}", "--dry-run"], "diff": ["diff", "resnet18", "{f}"],
                 "export": ["export", "{f}", "--format", "state_dict", "--out", "never.pt"],
                 "compare": ["compare", "{f}", "--reference", "torchvision:resnet18"],
                 "train": ["train", "{f}", "--data", "no_such_folder"]}


@pytest.mark.parametrize("command", sorted(SPEC_COMMANDS))
def test_every_spec_command_refuses_the_corpus_alike(cli, monkeypatch, command):
    import importlib.util
    if importlib.util.find_spec(f"resnet_spec.commands.{command}") is None:
        pytest.skip(f"no `{command}` command in this tree")
    monkeypatch.chdir(HOSTILE)
    for case in CASES:
        if (HOSTILE / f"{case}.args").exists():
            continue
        code, out, err = cli([a.replace("{f}", f"{case}.yaml") for a in SPEC_COMMANDS[command]])
        assert (code, err) == (1, (HOSTILE / f"{case}.expected").read_text()), case
        _no_traceback(out, err)
    assert not (HOSTILE / "never.pt").exists()


# YAML that tries to run code.

@pytest.mark.parametrize("command", ["validate", "build"])
def test_python_tag_runs_nothing(cli, monkeypatch, tmp_path, command):
    spec = tmp_path / "python_tag.yaml"
    spec.write_text((HOSTILE / "python_tag.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    code, _, err = cli([command, "python_tag.yaml"])
    assert code == 1 and "YAML tags" in err
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
    r = _run_isolated("import resource, sys\n"
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
    r = _run_isolated("import sys, yaml\n"
                      "from resnet_spec import yamlio\n"
                      f"yamlio._Parser = getattr(yaml, {parser!r})\n"
                      "from resnet_spec.cli import main\n"
                      "sys.exit(main(['validate', 'deep.yaml']))", tmp_path)
    assert r.returncode == 1, r.stderr  # a segfault would be -11
    assert re.fullmatch(r"deep\.yaml:\d+:\d+: (\$[.\w\[\]]*: )?nesting deeper than 32 levels; a spec needs a handful\n",
                        r.stderr), r.stderr


def test_50_mb_file_is_refused_by_the_size_cap(cli, monkeypatch, tmp_path):
    with (tmp_path / "big.yaml").open("w") as f:
        f.write("spec_version: 1\nstages: [{channels: 8, blocks: 1}]\n")
        line = "# padding " + "x" * 90 + "\n"
        for _ in range(50 * 10_000):
            f.write(line)
    assert (tmp_path / "big.yaml").stat().st_size > 50_000_000
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["validate", "big.yaml"])
    assert code == 1
    assert err == "big.yaml: file is larger than the 1,048,576-byte (1 MiB) limit for a spec\n"


def test_too_many_values_is_refused(cli, monkeypatch, tmp_path):
    """Under the size cap, 12,000 values would make the schema walk and the error list long."""
    (tmp_path / "wide.yaml").write_text("spec_version: 1\nstages: [" + "{}, " * 12_000 + "]\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["validate", "wide.yaml"])
    assert code == 1
    assert err == "wide.yaml:2:39990: more than 10,000 keys and values; a spec holds a few hundred\n"


def test_directory_missing_and_overlong_names(cli, monkeypatch, tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    monkeypatch.chdir(tmp_path)
    assert cli(["validate", "dir.yaml"])[1:] == ("", "dir.yaml: is a directory, not a spec file\n")
    assert cli(["validate", "missing.yaml"])[1:] == ("", "missing.yaml: no such file\n")
    long = "a" * 5000 + ".yaml"
    code, _, err = cli(["validate", long])
    assert code == 1 and err == f"{long}: cannot read: File name too long\n"


def test_a_pipe_is_refused_without_blocking(cli, monkeypatch, tmp_path):
    os.mkfifo(tmp_path / "pipe.yaml")  # opening it for reading would wait for a writer forever
    (tmp_path / "via.yaml").write_text("spec_version: 1\nextends: pipe.yaml\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["validate", "pipe.yaml"])
    assert code == 1 and err == "pipe.yaml: is not a regular file (a pipe, socket or device), not a spec file\n"
    code, _, err = cli(["validate", "via.yaml"])
    assert code == 1 and err == "pipe.yaml: is not a regular file (a pipe, socket or device), not a spec file\n"


def test_a_symlink_loop_is_refused(cli, monkeypatch, tmp_path):
    (tmp_path / "loop.yaml").symlink_to("loop.yaml")
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["validate", "loop.yaml"])
    assert code == 1 and err == "loop.yaml: cannot read: Too many levels of symbolic links\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file; the next test covers the message")
def test_unreadable_file(cli, monkeypatch, tmp_path):
    (tmp_path / "secret.yaml").write_text("spec_version: 1\n")
    (tmp_path / "secret.yaml").chmod(0)
    monkeypatch.chdir(tmp_path)
    assert cli(["validate", "secret.yaml"])[1:] == ("", "secret.yaml: cannot read: Permission denied\n")


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
    assert cli(["validate", "secret.yaml"])[1:] == ("", "secret.yaml: cannot read: Permission denied\n")


def test_extends_chain_of_the_documented_limit_is_accepted(cli, monkeypatch):
    """8 files (parts/chain1 .. chain8) load; extends_too_deep.yaml adds a ninth and is refused."""
    monkeypatch.chdir(HOSTILE)
    assert cli(["validate", "parts/chain1.yaml"]) == (0, "parts/chain1.yaml: ok\n", "")


# Absurd sizes: refused before anything is allocated.

def test_cost_caps_refuse_before_building(cli, monkeypatch):
    """Without --dry-run the same refusal comes before the build (the model would need about 40 PB)."""
    monkeypatch.chdir(HOSTILE)
    code, out, err = cli(["build", "cost_params.yaml"])
    assert code == 1 and out == "" and err == (HOSTILE / "cost_params.expected").read_text()


def test_cost_caps_are_flags(cli, monkeypatch, tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    monkeypatch.chdir(tmp_path)
    from resnet_spec.factory import build_model
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
    assert code == 2 and err.splitlines()[-1] == "resnet-spec build: error: argument --max-blocks: must be at least 1, got 0"


def test_build_model_applies_the_caps():
    from resnet_spec.factory import build_model
    from resnet_spec.limits import LimitError
    with pytest.raises(LimitError, match=r"cost_params: 10,414,587,288,487,120 parameters"):
        build_model(HOSTILE / "cost_params.yaml")


# Checkpoints and weights, through `build --weights` (and `predict`, which loads checkpoints too).

class _RunsShell:
    """Unpickles to os.system(command): what a malicious checkpoint carries."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture
def tiny(tmp_path, monkeypatch) -> Path:
    """A working folder holding tiny.yaml, as the current directory."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _save_evil(path: Path, how: str, marker: Path) -> None:
    payload = {"state_dict": {"fc.bias": torch.zeros(3)}, "x": _RunsShell(f"touch {marker}")}
    if how == "torch_zip":
        torch.save(payload, path)
    else:  # a bare pickle, as torch's legacy format reads them (no tensors: they pickle through a torch global)
        path.write_bytes(pickle.dumps({"x": payload["x"]}, protocol=2))


@pytest.mark.parametrize("how", ["torch_zip", "legacy_pickle"])
def test_malicious_checkpoint_runs_nothing(cli, tiny, how):
    marker = tiny / "marker_pickle"
    _save_evil(tiny / "evil.pt", how, marker)
    code, _, err = cli(["build", "tiny.yaml", "--weights", "evil.pt"])
    assert code == 1
    assert err.splitlines()[-1] == ("resnet-spec build: error: evil.pt: refused: it asks for the Python object "
                                    "posix.system; only tensors and plain data are loaded, and nothing in the file was run")
    code, _, err = cli(["predict", "evil.pt", "any.png"])
    assert code == 1 and "evil.pt: refused: it asks for the Python object posix.system" in err
    assert not marker.exists()
    # The payload is live: a full unpickle runs it (torch then rejects the legacy file's missing magic
    # number, too late). So the check above can fail.
    with contextlib.suppress(RuntimeError):
        torch.load(tiny / "evil.pt", weights_only=False)
    assert marker.exists()


def _weights_error(cli, path: str) -> tuple[int, str]:
    code, _, err = cli(["build", "tiny.yaml", "--weights", path])
    _no_traceback(err)
    return code, err.splitlines()[-1] if err else ""


def test_truncated_empty_and_foreign_checkpoints(cli, tiny):
    assert cli(["build", "tiny.yaml", "--out", "good.pt"])[0] == 0
    data = (tiny / "good.pt").read_bytes()
    (tiny / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tiny / "empty.pt").write_bytes(b"")
    (tiny / "notes.pt").write_text("these are not weights\n")
    torch.save([torch.zeros(2)], tiny / "list.pt")
    (tiny / "folder.pt").mkdir()
    prefix = "resnet-spec build: error: "
    assert _weights_error(cli, "truncated.pt") == (1, prefix + "truncated.pt: a truncated or corrupt checkpoint")
    assert _weights_error(cli, "empty.pt") == (1, prefix + "empty.pt: empty file, not a checkpoint")
    assert _weights_error(cli, "notes.pt") == (1, prefix + "notes.pt: not a torch checkpoint")
    assert _weights_error(cli, "list.pt") == (1, prefix + "list.pt: expected a checkpoint dict, got list")
    assert _weights_error(cli, "folder.pt") == (1, prefix + "folder.pt: is a directory")
    assert _weights_error(cli, "absent.pt") == (1, prefix + "absent.pt: no such file")


def test_checkpoint_of_another_spec_shows_the_key_and_shape_diff(cli, tiny):
    (tiny / "other.yaml").write_text(TINY.replace("{channels: 8, blocks: 1, stride: 2}",
                                                  "{channels: 16, blocks: 2, stride: 2}"))
    assert cli(["build", "other.yaml", "--out", "other.pt"])[0] == 0
    assert _weights_error(cli, "other.pt") == (1, (
        "resnet-spec build: error: other.pt: weights (saved from 'other') do not fit this model: "
        "12 unexpected (layer2.1.conv1.weight, layer2.1.bn1.weight, layer2.1.bn1.bias, and 9 more), "
        "16 of another shape (layer2.0.conv1.weight: 16x4x3x3 in the file, 8x4x3x3 in the model; "
        "layer2.0.bn1.weight: 16 in the file, 8 in the model; and 14 more)"))


def test_weights_that_fit_load_and_nans_are_warned(cli, tiny):
    assert cli(["build", "tiny.yaml", "--out", "good.pt", "--seed", "1"])[0] == 0
    sd = torch.load(tiny / "good.pt", weights_only=True)["state_dict"]
    torch.save(sd, tiny / "bare.pt")  # a bare state_dict loads too
    code, out, err = cli(["build", "tiny.yaml", "--weights", "bare.pt"])
    assert code == 0 and err == "" and "output 1x3" in out
    sd["fc.bias"][1] = float("nan")
    sd["layer1.0.bn1.weight"][0] = float("inf")
    torch.save(sd, tiny / "nan.pt")
    code, out, err = cli(["build", "tiny.yaml", "--weights", "nan.pt"])
    assert code == 0 and "output 1x3" in out
    assert err == (f"resnet-spec build: warning: nan.pt: 2 of {len(sd)} tensors hold NaN or infinite values "
                   "(layer1.0.bn1.weight, fc.bias)\n")


def test_safetensors_weights_load_and_bad_ones_are_refused(cli, tiny):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    assert cli(["build", "tiny.yaml", "--out", "good.pt"])[0] == 0
    sd = torch.load(tiny / "good.pt", weights_only=True)["state_dict"]
    safetensors_torch.save_file(sd, tiny / "w.safetensors")
    code, out, err = cli(["build", "tiny.yaml", "--weights", "w.safetensors"])
    assert code == 0 and err == "" and "output 1x3" in out
    data = (tiny / "w.safetensors").read_bytes()
    (tiny / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (tiny / "pickle.safetensors").write_bytes((tiny / "good.pt").read_bytes())
    del sd["fc.bias"]
    safetensors_torch.save_file(sd, tiny / "short.safetensors")
    prefix = "resnet-spec build: error: "
    assert _weights_error(cli, "cut.safetensors") == (1, prefix + "cut.safetensors: a truncated or corrupt safetensors file")
    assert _weights_error(cli, "pickle.safetensors") == (1, prefix + "pickle.safetensors: a truncated or corrupt "
                                                         "safetensors file")
    assert _weights_error(cli, "short.safetensors") == (1, prefix + "short.safetensors: weights do not fit this model: "
                                                        "1 missing (fc.bias)")


def test_a_torch_whose_weights_only_load_runs_code_is_not_trusted(cli, tiny, monkeypatch):
    """Below torch 2.6, weights_only=True could run code (CVE-2025-32434): no checkpoint is opened at all."""
    assert cli(["build", "tiny.yaml", "--out", "good.pt"])[0] == 0
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    assert _weights_error(cli, "good.pt") == (1, "resnet-spec build: error: good.pt: not loaded: torch 2.5.1's "
                                              "weights-only loading can run code from the file (CVE-2025-32434); "
                                              "upgrade to torch 2.6 or later")


def test_a_tampered_embedded_spec_is_validated_like_a_file(cli, tiny):
    """predict builds from the spec inside the checkpoint: it gets the schema, the rules and the cost caps."""
    sd = {"fc.bias": torch.zeros(3)}
    bad = {"spec_version": 1, 1: 2, "stages": [{"channels": 8.0, "blocks": float("nan")}]}
    torch.save({"format": "resnet-spec/1", "spec": bad, "state_dict": sd}, tiny / "tampered.pt")
    code, out, err = cli(["predict", "tampered.pt", "image.png"])
    assert code == 1 and err == ("tampered.pt: $.stages[0].blocks: expected an integer, got NaN\n"
                                 "tampered.pt: $.stages[0].channels: expected an integer, got 8.0\n"
                                 "tampered.pt: $[1]: unknown key '1'\n")
    huge = {"spec_version": 1, "stages": [{"channels": 16384, "blocks": 1000}] * 8}
    torch.save({"format": "resnet-spec/1", "name": "huge", "spec": huge, "state_dict": sd}, tiny / "huge.pt")
    code, out, err = cli(["predict", "huge.pt", "image.png"])
    assert code == 1 and err == ("resnet-spec predict: error: huge: 8,000 residual blocks, more than the cap of "
                                 "1,000 (--max-blocks raises it)\n")


# Writing outputs.

def test_out_into_a_missing_folder_or_onto_a_folder(cli, tiny):
    (tiny / "file").write_text("x")
    (tiny / "dir").mkdir()
    for out, msg in [("nowhere/m.pt", "nowhere/m.pt: folder nowhere does not exist"),
                     ("file/m.pt", "file/m.pt: file is not a folder"),
                     ("dir", "dir: is a directory; give a file name")]:
        code, stdout, err = cli(["build", "tiny.yaml", "--out", out])
        assert (code, stdout, err) == (1, "", f"resnet-spec build: error: {msg}\n")


OUT_COMMANDS = {"build": ["build", "tiny.yaml", "--out", "{o}"],
                "export": ["export", "tiny.yaml", "--format", "state_dict", "--out", "{o}"],
                "import": ["import", "torchvision:resnet18", "--out", "{o}"]}


@pytest.mark.parametrize("command", sorted(OUT_COMMANDS))
def test_every_writing_command_refuses_a_missing_folder_first(cli, tiny, command):
    import importlib.util
    module = "import_" if command == "import" else command
    if importlib.util.find_spec(f"resnet_spec.commands.{module}") is None:
        pytest.skip(f"no `{command}` command in this tree")
    code, out, err = cli([a.replace("{o}", "nowhere/out.x") for a in OUT_COMMANDS[command]])
    assert (code, err) == (1, f"resnet-spec {command}: error: nowhere/out.x: folder nowhere does not exist\n")
    assert not (tiny / "nowhere").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a mode-555 folder; the next test covers it")
def test_out_into_a_read_only_folder(cli, tiny):
    (tiny / "ro").mkdir(mode=0o555)
    code, out, err = cli(["build", "tiny.yaml", "--out", "ro/m.pt"])
    assert (code, out, err) == (1, "", "resnet-spec build: error: ro/m.pt: folder ro is not writable\n")


def test_out_into_a_read_only_folder_as_any_user(cli, tiny, monkeypatch):
    """As root, access() grants a mode-555 folder (and root can write there); simulate the refusal."""
    (tiny / "ro").mkdir(mode=0o555)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p).name == "ro" else real_access(p, mode))
    code, out, err = cli(["build", "tiny.yaml", "--out", "ro/m.pt"])
    assert (code, out, err) == (1, "", "resnet-spec build: error: ro/m.pt: folder ro is not writable\n")


@pytest.mark.parametrize("old", [b"the old checkpoint", None])
def test_a_write_failing_midway_leaves_the_old_file_and_no_partial_one(cli, tiny, monkeypatch, old):
    if old is not None:
        (tiny / "m.pt").write_bytes(old)

    def half_then_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 the first half of a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(torch, "save", half_then_full)
    code, _, err = cli(["build", "tiny.yaml", "--out", "m.pt"])
    kept = "the old file is unchanged" if old else "nothing was written"
    assert code == 1 and err == f"resnet-spec build: error: m.pt: writing failed (No space left on device); {kept}\n"
    assert sorted(p.name for p in tiny.iterdir()) == (["m.pt", "tiny.yaml"] if old else ["tiny.yaml"])
    if old:
        assert (tiny / "m.pt").read_bytes() == old


def test_a_real_write_failure_from_a_file_size_limit(tiny):
    """RLIMIT_FSIZE makes the kernel refuse writes past 4 KiB (EFBIG), partway through torch.save."""
    (tiny / "m.pt").write_bytes(b"the old checkpoint")
    r = _run_isolated("import resource, signal, sys\n"
                      "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                      "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
                      "from resnet_spec.cli import main\n"
                      "sys.exit(main(['build', 'tiny.yaml', '--out', 'm.pt']))", tiny)
    assert r.returncode == 1
    assert re.fullmatch(r"resnet-spec build: error: m\.pt: writing failed \(.+\); the old file is unchanged\n",
                        r.stderr), r.stderr
    assert (tiny / "m.pt").read_bytes() == b"the old checkpoint"
    assert sorted(p.name for p in tiny.iterdir()) == ["m.pt", "tiny.yaml"]


def test_an_interrupt_midway_leaves_the_old_file(tmp_path):
    from resnet_spec.fileio import atomic_write
    (tmp_path / "out.bin").write_bytes(b"old")

    def interrupted(f):
        f.write(b"new, partly")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "out.bin", interrupted)
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    assert (tmp_path / "out.bin").read_bytes() == b"old"
    atomic_write(tmp_path / "out.bin", lambda f: f.write(b"new"))
    assert (tmp_path / "out.bin").read_bytes() == b"new"
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == 0o644


# Specs the fuzzer (tests/test_fuzz.py) found crashing the build. Each must be refused with records.

FUZZ_FINDS = {
    "no_stages": "spec_version: 1\n",  # KeyError 'stages': the schema does not require it
    "duplicate_override_index": ("spec_version: 1\nstages:\n  - channels: 8\n    blocks: 1\n    overrides:\n"
                                 "      - {index: 0, block: {}}\n      - {index: 0, block: {act_before_add: true}}\n"),
    "deep_tiered_stem_width_3": "spec_version: 1\nstem: {type: deep_tiered, width: 3}\nstages: [{channels: 8, blocks: 1}]\n",
    "stride_3_conv_shortcut": "spec_version: 1\nstages: [{channels: 8, blocks: 1, stride: 3}]\n",
    # OverflowError: ECA's kernel size int(|log2(c) + beta| / gamma) is infinite for the smallest positive gamma
    "eca_gamma_tiny": "spec_version: 1\nblock: {attention: {type: eca, gamma: 5.0e-324}}\nstages: [{channels: 8, blocks: 1}]\n",
}


@pytest.mark.parametrize("name", sorted(FUZZ_FINDS))
def test_fuzz_finds_are_refused_not_crashed(cli, tmp_path, monkeypatch, name):
    (tmp_path / f"{name}.yaml").write_text(FUZZ_FINDS[name])
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["build", f"{name}.yaml", "--dry-run"])
    assert code == 1
    assert err and all(line.startswith(f"{name}.yaml:") for line in err.splitlines()), err
    _no_traceback(out, err)


def test_windows_files_are_accepted(cli, monkeypatch, tmp_path):
    """Not hostile, only foreign: a UTF-8 byte-order mark and CRLF line endings load as usual."""
    (tmp_path / "win.yaml").write_bytes(b"\xef\xbb\xbfspec_version: 1\r\nstages: [{channels: 8, blocks: 1}]\r\n")
    monkeypatch.chdir(tmp_path)
    assert cli(["validate", "win.yaml"]) == (0, "win.yaml: ok\n", "")


CHECKPOINT_COMMANDS = {"build": ["build", "tiny.yaml", "--weights", "{f}"],
                       "export": ["export", "tiny.yaml", "--format", "state_dict", "--weights", "{f}", "--out", "o.pt"],
                       "predict": ["predict", "{f}", "image.png"], "evaluate": ["evaluate", "{f}", "--data", "val"]}


@pytest.mark.parametrize("command", sorted(CHECKPOINT_COMMANDS))
def test_every_checkpoint_command_refuses_bad_files_alike(cli, tiny, command):
    import importlib.util
    if importlib.util.find_spec(f"resnet_spec.commands.{command}") is None:
        pytest.skip(f"no `{command}` command in this tree")
    marker = tiny / "marker_pickle"
    _save_evil(tiny / "evil.pt", "torch_zip", marker)
    _save_evil(tiny / "legacy.pt", "legacy_pickle", marker)
    torch.save({"fc.bias": torch.zeros(3)}, tiny / "good.pt")
    data = (tiny / "good.pt").read_bytes()
    (tiny / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tiny / "empty.pt").write_bytes(b"")
    (tiny / "notes.pt").write_text("these are not weights\n")
    (tiny / "folder.pt").mkdir()
    refused = "refused: it asks for the Python object posix.system; only tensors and plain data are loaded, " \
              "and nothing in the file was run"
    for name, why in [("evil.pt", refused), ("legacy.pt", refused), ("truncated.pt", "a truncated or corrupt checkpoint"),
                      ("empty.pt", "empty file, not a checkpoint"), ("notes.pt", "not a torch checkpoint"),
                      ("folder.pt", "is a directory"), ("absent.pt", "no such file")]:
        code, out, err = cli([a.replace("{f}", name) for a in CHECKPOINT_COMMANDS[command]])
        assert code == 1 and err.splitlines()[-1] == f"resnet-spec {command}: error: {name}: {why}", err
        _no_traceback(out, err)
    assert not marker.exists() and not (tiny / "o.pt").exists()
