"""The benchmarks still run: each one's smoke mode, at toy sizes. Timing goals are never judged here."""
from __future__ import annotations

import os
import subprocess
import sys

from helpers import ROOT

SECTIONS = ("validate (subprocess)", "build to load weights", "build with random init", "eager forward",
            "optimized (BN fold + channels_last)", "optimized + torch.compile", "training loop (in-memory data)",
            "fp32 eager", "fp32 inductor", "fp32 onnxruntime", "resnet-spec fp32 (auto: ")


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
