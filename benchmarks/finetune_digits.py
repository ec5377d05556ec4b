"""Fine-tuning, shown on sklearn's digits: train on digits 0-4, then fine-tune on digits 5-9 from that run,
against the same epochs on 5-9 from scratch. Same spec, data, seed and settings on both sides.

    python benchmarks/finetune_digits.py                 # the figures in docs/training.md
    python benchmarks/finetune_digits.py --smoke         # a few images and one epoch: checks it runs (CI)

Prints each run's best val top-1 and exits 0; it has no goal to miss (the numbers are the result).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resnet_spec.cli.main import main as cli_main  # noqa: E402
from resnet_spec.train.digits import write_digits  # noqa: E402

SPEC = str(ROOT / "specs" / "resnet10_cifar.yaml")


def subset(digits: Path, dest: Path, keep: range) -> Path:
    """A dataset folder with only the classes in `keep`."""
    for split in ("train", "val"):
        for d in keep:
            shutil.copytree(digits / split / str(d), dest / split / str(d))
    return dest


def train(args: list[str], quiet: bool) -> float:
    """`resnet-spec train ARGS` in this process; the run's best val top-1 (0..1)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext(), \
            contextlib.redirect_stderr(io.StringIO()):
        code = cli_main(["train", *args])
    if code != 0:
        raise SystemExit(f"resnet-spec train {' '.join(args)} exited {code}")
    run = Path(args[args.index("--out") + 1])
    return float(torch.load(run / "last.pt", weights_only=True)["best_top1"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="a few images per class and one epoch each")
    p.add_argument("--pretrain-epochs", type=int, default=15)
    p.add_argument("--epochs", type=int, default=3, help="epochs on digits 5-9, for both runs (default: 3)")
    p.add_argument("--freeze", type=int, default=0, help="stages frozen when fine-tuning (default: 0)")
    p.add_argument("--head-lr-scale", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pre, epochs = (1, 1) if args.smoke else (args.pretrain_epochs, args.epochs)
    common = ["--image-size", "16", "--batch-size", "64", "--workers", "0", "--optimizer", "adamw", "--lr", "3e-3",
              "--weight-decay", "0.05", "--label-smoothing", "0.1", "--min-scale", "0.35", "--no-flip",
              "--device", "cpu", "--seed", "0"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        digits = write_digits(work / "digits", per_class=8 if args.smoke else None)
        low, high = subset(digits, work / "d04", range(5)), subset(digits, work / "d59", range(5, 10))
        base = train([SPEC, "--data", str(low), "--out", str(work / "pre"), "--epochs", str(pre), *common],
                     quiet=True)
        tuned = train([SPEC, "--data", str(high), "--out", str(work / "tuned"), "--epochs", str(epochs),
                       "--weights", str(work / "pre"), "--freeze", str(args.freeze),
                       "--head-lr-scale", str(args.head_lr_scale), *common], quiet=True)
        scratch = train([SPEC, "--data", str(high), "--out", str(work / "scratch"), "--epochs", str(epochs),
                         *common], quiet=True)
    print(f"pretrained on digits 0-4, {pre} epochs: best val top-1 {100 * base:.2f}%")
    print(f"digits 5-9, {epochs} epochs, fine-tuned from it (freeze {args.freeze}, head lr x{args.head_lr_scale:g}): "
          f"best val top-1 {100 * tuned:.2f}%")
    print(f"digits 5-9, {epochs} epochs, from scratch: best val top-1 {100 * scratch:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
