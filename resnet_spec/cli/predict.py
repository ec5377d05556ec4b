"""resnet-spec predict: the top-k classes of one or many images from a trained checkpoint."""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argparse import Namespace

    from .common import Subparsers


def register(sub: Subparsers) -> None:
    from .common import add_command, device_name, positive_int
    p = add_command(sub, "predict", "Predict the top-k classes of images with a checkpoint from `resnet-spec train`.",
                    "  resnet-spec predict runs/r18/best.pt tulip.jpg\n"
                    "  resnet-spec predict runs/r18/best.pt photos/*.jpg --topk 3 --format json")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a best.pt or last.pt written by `resnet-spec train`, or its run folder; with --spec, any "
                        "weights (a torchvision or timm state_dict, .safetensors, a Hugging Face folder)")
    p.add_argument("--spec", metavar="FILE|NAME", help="the spec of plain weights that carry none")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--topk", type=positive_int, default=5, metavar="K", help="classes to show per image (default: 5)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                   help="images per forward pass (default: 32)")
    p.add_argument("--image-size", type=positive_int, metavar="N",
                   help="crop size (default: the size the model was trained at)")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.set_defaults(func=run)


def run(args: Namespace) -> int:
    from .build import _device
    device = _device(args.device)
    from ..train.predict import predict
    from .weights import trained as load
    trained = load(args.checkpoint, args.spec, device, args.image_size)
    bad: list[str] = []

    def on_bad(reason: str) -> None:
        bad.append(reason)
        print(f"resnet-spec predict: skipping unreadable image {reason}", file=sys.stderr)

    results = predict(trained, list(args.images), args.topk, args.batch_size, device, on_bad)
    if args.format == "json":
        print(json.dumps([{"image": r.image, "top": [{"class": c, "index": i, "probability": p} for c, i, p in r.top]}
                          for r in results], indent=2))
    else:
        for r in results:
            best = r.top[0]
            others = ", ".join(f"{c} {p:.3f}" for c, _, p in r.top[1:])
            print(f"{r.image}: {best[0]} ({best[2]:.3f})" + (f"; then {others}" if others else ""))
    if bad:
        print(f"resnet-spec predict: {len(bad)} of {len(args.images)} images could not be read", file=sys.stderr)
        return 1
    return 0
