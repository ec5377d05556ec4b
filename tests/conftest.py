"""Shared test helpers."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def cli(capsys):
    """Run resnet-spec in-process: cli(["build", ...]) -> (exit code, stdout, stderr)."""
    from resnet_spec.cli.main import main

    def run(argv: list[str]) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err
    return run


# A tiny net for the checkpoint and output cases of the hostile-input tests.
TINY = ("# A tiny net for the checkpoint and output cases.\nspec_version: 1\ninput: {size: 16}\n"
        "stem: {type: cifar, width: 4}\nstages: [{channels: 4, blocks: 1}, {channels: 8, blocks: 1, stride: 2}]\n"
        "head: {num_classes: 3}\n")


@pytest.fixture
def tiny(tmp_path, monkeypatch) -> Path:
    """A working folder holding tiny.yaml, as the current directory."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_isolated(code: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """Python code in a fresh process: a crash (segfault, memory) there cannot take the test run with it."""
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def no_traceback(*texts: str) -> None:
    """No Python traceback or bare exception line in any of the texts."""
    for t in texts:
        assert "Traceback" not in t and not re.search(r"^\w+(Error|Exception):", t, re.M), t

