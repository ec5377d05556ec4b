"""resnet-spec evaluate: a checkpoint's top-1, top-5 and per-class accuracy on a class folder, and its confusions."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argparse import Namespace

    from .common import Subparsers


def register(sub: Subparsers) -> None:
    from .common import add_command, device_name, int_range, positive_int
    p = add_command(sub, "evaluate", "Evaluate a checkpoint from `resnet-spec train` on a folder of class subfolders.",
                    "  resnet-spec evaluate runs/r18/best.pt --data flowers/val\n"
                    "  resnet-spec evaluate runs/r18/best.pt --data flowers/val --confusion cm.png --format json")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a best.pt or last.pt written by `resnet-spec train`, or its run folder; with --spec, any "
                        "weights (a torchvision or timm state_dict, .safetensors, a Hugging Face folder)")
    p.add_argument("--spec", metavar="FILE|NAME", help="the spec of plain weights that carry none")
    p.add_argument("--data", required=True, metavar="DIR", help="a folder of class subfolders, e.g. DATASET/val")
    p.add_argument("--confusion", metavar="PNG",
                   help="confusion-matrix plot (default: confusion.png beside the checkpoint)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.add_argument("--batch-size", type=positive_int, default=64, metavar="N",
                   help="images per forward pass (default: 64)")
    p.add_argument("--workers", type=int_range(0, 256), default=0, metavar="N",
                   help="data-loading processes (default: 0)")
    p.add_argument("--image-size", type=positive_int, metavar="N",
                   help="crop size (default: the size the model was trained at)")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.set_defaults(func=run)


def run(args: Namespace) -> int:
    from .train import require
    require("resnet-spec evaluate", ("matplotlib",))
    from ..fileio import check_writable
    run_dir = Path(args.checkpoint) if Path(args.checkpoint).is_dir() else Path(args.checkpoint).parent
    plot = Path(args.confusion) if args.confusion else run_dir / "confusion.png"
    check_writable(plot)
    from .build import _device
    device = _device(args.device)
    from ..train.metrics import plot_confusion
    from ..train.predict import evaluate
    from .weights import trained as load
    trained = load(args.checkpoint, args.spec, device, args.image_size)

    def on_bad(reason: str) -> None:
        print(f"resnet-spec evaluate: skipping unreadable image {reason}", file=sys.stderr)

    ev = evaluate(trained, args.data, args.batch_size, args.workers, device, on_bad)
    plot_confusion(plot, ev.confusion.numpy(), trained.classes)
    if args.format == "json":
        print(json.dumps({"images": ev.images, "skipped": ev.skipped, "top1": ev.top1, "top5": ev.top5,
                          "per_class": {c: {"images": n, "top1": a} for c, n, a in ev.per_class},
                          "confusion": ev.confusion.tolist(), "confusion_png": str(plot)}, indent=2))
        return 0
    skipped = f" ({ev.skipped} unreadable, skipped)" if ev.skipped else ""
    print(f"{trained.name} on {args.data}: {ev.images} images{skipped}")
    print(f"top-1 {100 * ev.top1:.2f}%   top-5 {100 * ev.top5:.2f}%")
    width = max(len("class"), *(len(c) for c, _, _ in ev.per_class))
    print(f"{'class':<{width}}  {'images':>6}  {'top-1':>7}")
    for c, n, a in ev.per_class:
        print(f"{c:<{width}}  {n:>6}  {100 * a:>6.2f}%")
    print(f"confusion matrix: {plot}")
    return 0
