"""What the test modules share: paths, the tiny spec, subprocess and output checks, reference helpers.

Fixtures stay in conftest.py; everything here is imported by name (`from helpers import SPECS`).
No test module imports another.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
DIGITS_PER_CLASS = 15  # the digits fixture: 12 train + 3 val images per digit, 120 / 30, a one-second epoch
# Small, quick training flags for the digits, without flip (a mirrored digit is another digit).
FAST_TRAIN = ["--image-size", "16", "--batch-size", "32", "--workers", "0", "--optimizer", "adamw", "--lr", "0.003",
              "--min-scale", "0.5", "--no-flip", "--device", "cpu", "--seed", "3"]
# For training subprocesses: one thread each (two shared cores), and the checkout importable.
TRAIN_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
DATA = Path(__file__).resolve().parent / "data"

# A tiny net for the checkpoint and output cases of the hostile-input tests.
TINY = ("# A tiny net for the checkpoint and output cases.\nspec_version: 1\ninput: {size: 16}\n"
        "stem: {type: cifar, width: 4}\nstages: [{channels: 4, blocks: 1}, {channels: 8, blocks: 1, stride: 2}]\n"
        "head: {num_classes: 3}\n")


def run_isolated(code: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """Python code in a fresh process: a crash (segfault, memory) there cannot take the test run with it."""
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def no_traceback(*texts: str) -> None:
    """No Python traceback or bare exception line in any of the texts."""
    for t in texts:
        assert "Traceback" not in t and not re.search(r"^\w+(Error|Exception):", t, re.M), t


def cli_choices(command: str, option: str) -> tuple[str, ...]:
    """The choices argparse allows for `resnet-spec COMMAND OPTION` (e.g. "train", "--optimizer")."""
    from resnet_spec.cli.main import make_parser
    sub = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if option in a.option_strings)
    assert action.choices is not None, f"{command} {option} has no choices"
    return tuple(action.choices)


def require_timm() -> ModuleType:
    """timm, or a skip of the calling test module where it is not installed: a reference, never a dependency."""
    return pytest.importorskip("timm")


def random_state(reference: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Every float tensor of reference's state_dict redrawn: conv/linear weights at He scale (so a
    50-layer net stays finite), norm weights and running variances in [0.5, 1.5), biases and running
    means in [-0.1, 0.1). Zero-initialised last norms and unit BN statistics would hide mistakes."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, v in reference.state_dict().items():
        if not v.is_floating_point():
            out[key] = v  # num_batches_tracked
        elif v.ndim >= 2:
            out[key] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / (v[0].numel()))
        elif key.endswith(("weight", "running_var")):
            out[key] = torch.rand(v.shape, generator=g) + 0.5
        else:
            out[key] = (torch.rand(v.shape, generator=g) - 0.5) * 0.2
    return out
