"""Shared fixtures. Shared constants and functions live in helpers.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import TINY


@pytest.fixture
def cli(capsys):
    """Run resnet-spec in-process: cli(["build", ...]) -> (exit code, stdout, stderr)."""
    from resnet_spec.cli.main import main

    def run(argv: list[str]) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.fixture
def tiny(tmp_path, monkeypatch) -> Path:
    """A working folder holding tiny.yaml, as the current directory."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    monkeypatch.chdir(tmp_path)
    return tmp_path
