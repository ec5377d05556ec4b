"""The benchmarks still run: each one's smoke mode, at toy sizes. Timing goals are never judged here."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT

SECTIONS = ("validate (subprocess)", "build to load weights", "build with random init", "eager forward",
            "optimized (BN fold + channels_last)", "optimized + torch.compile", "training loop (in-memory data)",
            "training loop, bf16 autocast (in-memory data)", "training bf16 autocast vs fp32",
            "fp32 eager", "fp32 inductor", "fp32 onnxruntime", "peer fp32 torchvision eager",
            "peer fp32 torchvision + torch.compile", "peer fp32 onnxruntime (torchvision export)",
            "resnet-spec fp32 vs fastest peer", "resnet-spec bf16 vs fastest peer", "resnet-spec int8 vs fastest peer",
            "int8 accuracy (digits)")


def test_bench_smoke_runs_every_row(tmp_path):
    out = tmp_path / "results.md"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "smoke: all" in proc.stdout and "rows ran" in proc.stdout
    text = out.read_text()
    for section in SECTIONS:
        assert f"| {section}" in text, section
    # The machine is recorded with the flags that decide bf16 and int8, and every engine row has a start-up time.
    assert "CPU: " in text and "flags: " in text
    engine_lines = [line for line in text.splitlines() if line.startswith("| fp32 eager |")]
    assert engine_lines and all(line.split(" | ")[5].endswith(" s") for line in engine_lines)
    # A smoke run judges no goal: toy sizes say nothing about speed.
    assert "Goals met: 0 of 0." in text
    # bf16 and int8 rows either ran or say which CPU feature they lack; they never fail the run.
    from resnet_spec.model.optimize import cpu_support
    for precision in ("bf16", "int8"):
        why = cpu_support(precision)
        rows = [line for line in text.splitlines() if line.startswith(f"| resnet-spec {precision} vs fastest peer |")]
        assert rows and all((f"not run: {why}" in line) if why else " ms (" in line for line in rows), rows
    speedup = next(line for line in text.splitlines() if line.startswith("| training bf16 autocast vs fp32 |"))
    assert ("not run: precision bf16 needs" in speedup) if cpu_support("bf16") else "x | " in speedup


def _script_smoke(name: str, *extra: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), "--smoke", *extra],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def test_train_digits_smoke_runs():
    out = _script_smoke("train_digits.py", "--threads", "1")
    assert "val top-1: final" in out and "loop overhead:" in out


def test_finetune_digits_smoke_runs():
    out = _script_smoke("finetune_digits.py")
    assert "fine-tuned from it" in out and "from scratch" in out


def test_int8_keeps_top1_within_half_a_point_on_digits():
    """Issue 16: int8 calibrated on the digits training images reaches top-1 within 0.5 points of fp32 on the
    digits model's validation split. The real check: the docs' digits model (15 epochs, about 25 s on one core),
    its int8 quantization by the engine build_model uses, both counted on the 364 held-out val images."""
    from resnet_spec.model.optimize import cpu_support
    if cpu_support("int8"):
        pytest.skip(cpu_support("int8"))
    # One thread: on a shared 2-core machine two OpenMP threads wait on each other and the run takes minutes.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "int8_digits.py"), "--threads", "1"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    found = re.search(r"int8 top-1 ([\d.]+)% vs fp32 ([\d.]+)% on (\d+) val images", proc.stdout)
    assert found, proc.stdout
    int8, fp32, images = float(found[1]), float(found[2]), int(found[3])
    assert images == 364 and fp32 >= 97.0, proc.stdout  # the trained digits model, on the whole val split
    assert fp32 - int8 <= 0.5, proc.stdout

