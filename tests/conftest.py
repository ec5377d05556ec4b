"""Shared test helpers."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def cli(capsys):
    """Run resnet-spec in-process: cli(["build", ...]) -> (exit code, stdout, stderr)."""
    from resnet_spec.cli import main

    def run(argv: list[str]) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err
    return run
