"""Hostile checkpoints and failing writes: nothing that is loaded runs code, nothing half-written is left.

Malicious, truncated and foreign checkpoints go through every command that loads one; writes are made to
fail midway (by monkeypatch, a file-size limit, an interrupt) and must leave the old file intact.
"""
from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import stat
from pathlib import Path

import pytest
import torch

from helpers import TINY, no_traceback, run_isolated

# Checkpoints and weights, through `build --weights` (and `predict`, which loads checkpoints too).

class _RunsShell:
    """Unpickles to os.system(command): what a malicious checkpoint carries."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


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
                                    "posix.system; only tensors and plain data are loaded, "
                                    "and nothing in the file was run")
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
    no_traceback(err)
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
    # A folder may be a train run or a Hugging Face model (issue 14); this one is neither.
    assert _weights_error(cli, "folder.pt") == (1, prefix + "folder.pt: a folder that is neither a train run "
                                                "(no best.pt or last.pt) nor a Hugging Face model (no config.json)")
    assert _weights_error(cli, "absent.pt") == (1, prefix + "absent.pt: no such file")


def test_checkpoint_of_another_spec_shows_the_key_and_shape_diff(cli, tiny):
    (tiny / "other.yaml").write_text(TINY.replace("{channels: 8, blocks: 1, stride: 2}",
                                                  "{channels: 16, blocks: 2, stride: 2}"))
    assert cli(["build", "other.yaml", "--out", "other.pt"])[0] == 0
    # The embedded spec differs from the one given: refused field by field (issue 14) ...
    assert _weights_error(cli, "other.pt") == (1, (
        "resnet-spec build: error: other.pt: the checkpoint was saved from spec 'other', which differs from 'tiny': "
        "$.stages[1].channels: 16 in the checkpoint, 8 given; $.stages[1].blocks: 2 in the checkpoint, 1 given "
        "(--ignore-spec loads it anyway)"))
    # ... and with --ignore-spec, the keys and shapes that do not fit.
    code, _, err = cli(["build", "tiny.yaml", "--weights", "other.pt", "--ignore-spec"])
    assert (code, err.splitlines()[-1]) == (1, (
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
    assert _weights_error(cli, "cut.safetensors") == (1, prefix + "cut.safetensors: a truncated or corrupt "
                                                             "safetensors file")
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
    if importlib.util.find_spec(f"resnet_spec.cli.{module}") is None:
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
    r = run_isolated("import resource, signal, sys\n"
                      "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                      "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
                      "from resnet_spec.cli.main import main\n"
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


CHECKPOINT_COMMANDS = {"build": ["build", "tiny.yaml", "--weights", "{f}"],
                       "export": ["export", "tiny.yaml", "--format", "state_dict", "--weights", "{f}", "--out", "o.pt"],
                       "predict": ["predict", "{f}", "image.png"], "evaluate": ["evaluate", "{f}", "--data", "val"]}


@pytest.mark.parametrize("command", sorted(CHECKPOINT_COMMANDS))
def test_every_checkpoint_command_refuses_bad_files_alike(cli, tiny, command):
    import importlib.util
    if importlib.util.find_spec(f"resnet_spec.cli.{command}") is None:
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
    for name, why in [("evil.pt", refused), ("legacy.pt", refused),
                      ("truncated.pt", "a truncated or corrupt checkpoint"),
                      ("empty.pt", "empty file, not a checkpoint"), ("notes.pt", "not a torch checkpoint"),
                      ("folder.pt", "a folder that is neither a train run (no best.pt or last.pt)"
                                    " nor a Hugging Face model (no config.json)"), ("absent.pt", "no such file")]:
        code, out, err = cli([a.replace("{f}", name) for a in CHECKPOINT_COMMANDS[command]])
        assert code == 1 and err.splitlines()[-1] == f"resnet-spec {command}: error: {name}: {why}", err
        no_traceback(out, err)
    assert not marker.exists() and not (tiny / "o.pt").exists()
