"""resnet-spec build: compile a spec, show what it costs, run one forward pass."""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..model.limits import Limits

if TYPE_CHECKING:
    from argparse import Namespace

    import torch

    from ..model.analysis import Row
    from ..spec.types import ResNetSpec
    from .common import Subparsers


def register(sub: Subparsers) -> None:
    from .common import add_command, device_name, num_classes, positive_int, seed
    p = add_command(sub, "build", "Build a spec into a torch model, print its per-stage table and run a forward pass.",
                    "  resnet-spec build specs/resnet34.yaml\n"
                    "  resnet-spec build resnet50 --device cuda --batch 32\n"
                    "  resnet-spec build my_net.yaml --num-classes 10 --input-size 64 --out my_net.pt\n"
                    "  resnet-spec build resnet152 --dry-run --verbose\n"
                    "  resnet-spec build resnet50 --dry-run --diagram resnet50.svg")
    p.add_argument("spec", metavar="FILE|NAME", nargs="?",
                   help="a spec file, or the name of a shipped spec (default: the spec --weights carries)")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--input-size", type=positive_int, metavar="N", help="input height and width (default: the spec's)")
    p.add_argument("--batch", type=positive_int, default=1, metavar="N",
                   help="batch size of the forward pass (default: 1)")
    p.add_argument("--num-classes", type=num_classes, metavar="N", help="resize the classifier to N outputs")
    p.add_argument("--out", metavar="FILE", help="save the state_dict with the resolved spec embedded")
    p.add_argument("--seed", type=seed, default=0,
                   help="random seed for the weights and input, 0 to 2**63-1 (default: 0)")
    p.add_argument("--dry-run", action="store_true", help="print the table only; allocate no real tensors")
    p.add_argument("--verbose", action="store_true", help="one row per block instead of per stage")
    p.add_argument("--diagram", metavar="FILE", help="also draw the network stage by stage as an SVG file")
    p.add_argument("--optimize", action="store_true",
                   help="fold each BatchNorm into its conv and use channels_last before the forward pass"
                        " (inference only)")
    p.add_argument("--weights", metavar="CKPT",
                   help="load these weights (strictly) before the forward pass: a checkpoint, train run folder, "
                        "state_dict (.pt/.pth, any common wrapping), .safetensors file or Hugging Face folder; "
                        "with --num-classes, a classifier of another size is re-initialised")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                   help="with --optimize: the arithmetic (bf16 needs AMX or AVX-512-BF16, int8 VNNI; default: fp32)")
    p.add_argument("--engine", choices=("auto", "eager", "inductor", "onnxruntime", "openvino"),
                   help="with --optimize: what runs the model (default: the BN fold for fp32, auto otherwise)")
    p.add_argument("--calibration", metavar="DIR", help="int8: an image folder calibrating the activation ranges")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text, or one JSON object with the spec, each stage's shape and cost, and the forward pass")
    p.add_argument("--ignore-spec", action="store_true",
                   help="load --weights even if the spec they were saved from differs from SPEC")
    p.add_argument("--max-params", type=positive_int, default=Limits.max_params, metavar="N",
                   help=f"refuse specs with more parameters (default: {Limits.max_params:,})")
    p.add_argument("--max-activation-mb", type=positive_int, default=Limits.max_activation_mb, metavar="MB",
                   help="refuse a forward pass whose layer outputs sum to more"
                        f" (default: {Limits.max_activation_mb:,})")
    p.add_argument("--max-blocks", type=positive_int, default=Limits.max_blocks, metavar="N",
                   help=f"refuse specs with more residual blocks (default: {Limits.max_blocks:,})")
    p.set_defaults(func=run)


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def _table(rows: list[Row], total: Row) -> str:
    lines = [f"{'':<10} {'output':>18} {'params':>13} {'MMACs':>10} {'act. MB':>9}"]
    for r in rows + [total]:
        shape = "" if r is total else _fmt_shape(r.shape)
        lines.append(f"{r.name:<10} {shape:>18} {r.params:>13,} {r.macs / 1e6:>10.1f}"
                     f" {r.activation_bytes / 2**20:>9.1f}")
    return "\n".join(lines)


def run(args: Namespace) -> int:
    from . import weights as _weights
    from .common import UsageError, check_device, check_input_size
    if (args.precision != "fp32" or args.engine or args.calibration) and not args.optimize:
        raise UsageError("--precision, --engine and --calibration need --optimize")
    if args.precision == "int8" and not args.calibration:
        raise UsageError("--precision int8 needs --calibration DIR (images to set the activation ranges)")
    spec, weights = _weights.spec_and_weights(args.spec, args.weights, args.ignore_spec, args.num_classes)
    if args.optimize and args.out:
        raise InputError("--optimize folds the BatchNorms away, so its weights no longer match the spec; drop --out")
    from ..fileio import check_writable
    for out in (args.out, args.diagram):
        if out:
            check_writable(out)
    # Everything a flag can get wrong is found before the table is printed or a model is built.
    check_input_size(spec, args.input_size, "--input-size")
    check_device(args.device)

    import torch

    from ..model.analysis import analyse, totals
    from ..model.limits import check
    # Before any allocation. A dry run allocates nothing, so only the block cap (which bounds the
    # analysis's own time) applies to it: a 2-billion-parameter spec can still be costed.
    limits = Limits(args.max_params, args.max_activation_mb, args.max_blocks)
    if args.dry_run:
        limits = Limits(sys.maxsize, sys.maxsize >> 20, args.max_blocks)
    cost = check(spec, limits, args.input_size, args.batch)
    size = cost.input_size
    rows = analyse(spec, size, args.batch, verbose=True) if args.verbose else list(cost.rows)
    total = totals(rows)
    report: dict[str, Any] = {
        "name": spec.name, "description": spec.description, "input": [args.batch, spec.in_channels, size, size],
        "rows": [{"name": r.name, "shape": list(r.shape), "params": r.params, "macs": r.macs,
                  "activation_bytes": r.activation_bytes} for r in rows],
        "params": total.params, "macs": total.macs}
    say = print if args.format == "text" else _quiet
    say(f"{spec.name}: {spec.description}" if spec.description else spec.name)
    say(f"input {args.batch}x{spec.in_channels}x{size}x{size}")
    say(_table(rows, total))
    per = "per image" if args.batch == 1 else f"per batch of {args.batch}"
    say(f"{total.params:,} parameters, {total.macs / 1e9:.3f} GMACs {per}")
    if args.diagram:
        _write_diagram(args.diagram, spec, list(cost.rows), size)
    if args.dry_run:
        return _report(args, report)

    device = _device(args.device)
    from ..model.factory import build_model
    torch.manual_seed(args.seed)
    model = build_model(spec, limits=None).to(device).eval()  # limits: checked above, with the flags' caps
    if weights is not None:
        from ..model.checkpoint import load_weights
        if args.num_classes is not None and weights.num_classes not in (None, args.num_classes):
            from ..model.weights import fit_weights
            print(f"weights: {fit_weights(model, weights, reinit_head=True)[-1]}", file=sys.stderr)
        elif weights.num_classes is not None and spec.head is not None and weights.num_classes != spec.head.num_classes:
            from ..model.weights import fit_weights
            fit_weights(model, weights)  # refused, naming the class count that would fit
        else:
            for warning in load_weights(model, args.weights, weights.state_dict, weights.name):
                print(f"resnet-spec build: warning: {warning}", file=sys.stderr)
    x = torch.randn(args.batch, spec.in_channels, size, size, device=device)
    if args.optimize:
        from ..model.optimize import optimize_for_inference
        calibration = None
        if args.calibration:
            from .bench import calibration_batches
            calibration = calibration_batches(args.calibration, size, spec=spec)
        model = optimize_for_inference(model, precision=args.precision, engine=args.engine, calibration=calibration,
                                       check_batch=x)
        result = getattr(model, "check", None)  # an engine's output check against eager fp32
        say(f"optimized for inference: {getattr(model, 'engine', '')} {args.precision}; {result}" if result else
            "optimized for inference: BatchNorms folded into their convs, channels_last")
        if result is not None:
            report["check"] = {"engine": getattr(model, "engine", None), "precision": args.precision,
                               "max_abs": result.max_abs, "max_rel": result.max_rel,
                               "top1_agreement": result.top1_agreement}
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ms = (time.perf_counter() - t0) * 1e3
    outs = out if isinstance(out, list) else [out]
    shapes = ", ".join(_fmt_shape(tuple(o.shape)) for o in outs)
    say(f"forward pass on {device}: output {shapes} in {ms:.1f} ms")
    report["forward"] = {"device": str(device), "outputs": [list(o.shape) for o in outs], "ms": ms}
    if args.out:
        from ..model.checkpoint import save_model
        save_model(args.out, model, spec)
        say(f"saved {args.out}")
        report["saved"] = str(args.out)
    return _report(args, report)


def _quiet(*_: object, **__: object) -> None:
    """print's stand-in when the output is JSON."""


def _report(args: Namespace, report: dict[str, Any]) -> int:
    if args.format == "json":
        import json
        print(json.dumps(report, indent=2))
    return 0


def _write_diagram(path: str, spec: ResNetSpec, rows: list[Row], size: int) -> None:
    from ..fileio import atomic_write
    from ..tools.diagram import render_svg
    svg = render_svg(spec, rows, size).encode("utf-8")
    atomic_write(path, lambda f: f.write(svg))
    print(f"wrote {path}")


def _device(name: str) -> torch.device:
    """The torch device for a --device value that device_name and check_device accepted."""
    import torch

    from .common import check_device, device_name
    check_device(device_name(name) if name != "auto" else "cpu")
    return torch.device(name)
