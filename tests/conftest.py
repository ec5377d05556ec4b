"""Shared fixtures. Shared constants and functions live in helpers.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import DIGITS_PER_CLASS, TINY


@pytest.fixture(autouse=True)
def _slow_only_when_asked(request):
    """Nothing deselects the slow marker by default, so a slow test runs only when -m names it."""
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("slow: run with -m slow")


@pytest.fixture
def one_thread():
    """One torch thread: on two shared cores, more only adds spinning (the training tests use it)."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """sklearn's digits as an image folder, DIGITS_PER_CLASS images a digit (12 train + 3 val)."""
    from resnet_spec.train.digits import write_digits
    return write_digits(tmp_path_factory.mktemp("digits"), per_class=DIGITS_PER_CLASS)


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
