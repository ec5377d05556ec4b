"""resnet-spec bench: every engine and precision this machine runs, timed on one spec, and the fastest that passes."""
from __future__ import annotations

import functools
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from argparse import Namespace

    import torch

    from ..spec.types import ResNetSpec
    from .common import Subparsers

PRECISION_CHOICES = ("fp32", "bf16", "int8")


def register(sub: Subparsers) -> None:
    from .common import add_command, device_name, positive_int
    p = add_command(sub, "bench",
                    "Time every inference engine and precision on one spec, check each against eager fp32, "
                    "and name the fastest.",
                    "  resnet-spec bench resnet50\n"
                    "  resnet-spec bench resnet18 --batch 1,8,32 --plot latency.png\n"
                    "  resnet-spec bench my_net.yaml --precision fp32,int8 --calibration digits/val")
    p.add_argument("spec", metavar="FILE|NAME", help="a spec file, or the name of a shipped spec")
    p.add_argument("--device", type=device_name, default="cpu",
                   help="cpu, cuda, cuda:N or auto (cuda when there is one; default: cpu)")
    p.add_argument("--batch", type=_int_list, default=(1, 8), metavar="N,N",
                   help="batch sizes to time (default: 1,8)")
    p.add_argument("--precision", type=_choice_list(PRECISION_CHOICES), default=PRECISION_CHOICES, metavar="P,P",
                   help="precisions to try: fp32, bf16, int8 (default: all; one the CPU cannot run fast is skipped"
                        " and says why)")
    p.add_argument("--engine", type=_word_list, metavar="E,E",
                   help="engines to try: eager, inductor, onnxruntime, openvino (default: every installed one)")
    p.add_argument("--input-size", type=positive_int, metavar="N", help="input height and width (default: the spec's)")
    p.add_argument("--calibration", metavar="DIR",
                   help="image folder (class subfolders) that calibrates int8 (default: random images, which "
                        "time int8 correctly but say nothing of its accuracy)")
    p.add_argument("--repeats", type=positive_int, default=5, metavar="N", help="timed runs per row (default: 5)")
    p.add_argument("--plot", metavar="FILE", help="draw latency against batch size as a PNG")
    p.set_defaults(func=run)


@dataclass
class Result:
    """One engine at one precision: start-up, output check, and the median seconds per batch size."""

    engine: str
    precision: str
    startup_s: float = 0.0
    check: str = ""
    passed: bool = False
    seconds: dict[int, float] = field(default_factory=dict)
    skipped: str = ""


def run(args: Namespace) -> int:
    import os
    # Idle OpenMP threads sleep rather than spin, so that torch, onnxruntime and OpenVINO in this one process do not
    # slow each other down; read only when torch loads, so it holds where this command imports torch first.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from .. import build_model, load_spec
    from ..model import engines, optimize
    from .common import check_device, check_input_size
    check_device(args.device)
    spec = load_spec(args.spec)
    check_input_size(spec, args.input_size, "--input-size")
    size = args.input_size or spec.input_size
    from ..errors import LimitError
    from ..model.limits import DEFAULT_LIMITS
    from ..model.limits import check as check_cost
    try:  # build's caps on parameters and activations, for the largest batch, before anything is allocated
        check_cost(spec, DEFAULT_LIMITS, size, max(args.batch))
    except LimitError as e:
        raise LimitError(f"{e}; bench a smaller --batch or --input-size") from None
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    names = args.engine or list(engines.ENGINES)
    unknown = [n for n in names if n not in engines.ENGINES]
    if unknown:
        raise InputError(f"engine {unknown[0]!r} is not one of {', '.join(engines.ENGINES)}", setting="engine")
    shape = (spec.in_channels, size, size)
    calib = (calibration_batches(args.calibration, size, spec=spec) if args.calibration
             else [torch.randn(8, *shape, generator=torch.Generator().manual_seed(i)) for i in range(4)])
    check = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    import torch._dynamo
    # Every ResNet shares one forward code object: inductor keeps a graph per precision and batch size on it, and
    # past recompile_limit it would silently run eager.
    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = max(limit, 2 * (len(args.batch) + 2))
    torch.manual_seed(0)
    # Trained-like BatchNorm statistics: a fresh init's are the identity, so every folded conv bias is zero, the ONNX
    # exporter merges those equal biases into one tensor, onnxruntime's int8 quantizer cannot quantize it, and int8
    # would be timed slower than fp32 (resnet18 at batch 8: 170 ms against 141 ms; with these statistics 44 ms).
    from ..tools.compare import randomise_norms_
    model = build_model(spec)
    randomise_norms_(model, seed=1)
    weights = model.state_dict()
    results: list[Result] = []
    runners: dict[tuple[str, str], Callable[[torch.Tensor], torch.Tensor]] = {}
    for precision in args.precision:
        why = optimize.cpu_support(precision) if device.type == "cpu" else None
        for name in names:
            r = Result(name, precision)
            results.append(r)
            if precision not in engines.ENGINES[name].precisions:
                r.skipped = f"{name} does not run {precision}"
            elif why:
                r.skipped = why
            elif engines.ENGINES[name].missing():
                r.skipped = f"{engines.ENGINES[name].missing()} is not installed"
            elif engines.ENGINES[name].cpu_only and device.type != "cpu":
                r.skipped = "CPU only"
            if r.skipped:
                continue
            model = build_model(spec, init="none", weights={k: v.clone() for k, v in weights.items()}).to(device)
            try:
                m = engines.accelerate(model, precision=precision, engine=name, calibration=calib,
                                       check_batch=check, strict=False)
            except Exception as e:  # one engine that fails to start must not hide the others
                r.skipped = f"failed to start: {type(e).__name__}: {str(e).splitlines()[0][:100]}"
                continue
            r.startup_s, r.check, r.passed = m.startup_s, str(m.check), m.check.passed
            runners[(name, precision)] = m
            print(f"started {name} {precision} in {r.startup_s:.1f} s; {r.check}", file=sys.stderr, flush=True)
    for batch in args.batch:
        x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))
        times = _interleaved({k: functools.partial(f, x) for k, f in runners.items()}, args.repeats)
        for r in results:
            if (r.engine, r.precision) in times:
                r.seconds[batch] = statistics.median(times[(r.engine, r.precision)])
    print(f"{args.spec} at {size}x{size} on {device}; torch threads {torch.get_num_threads()}; "
          f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY')}; medians of {args.repeats} interleaved runs")
    print(report(args.spec, size, args.batch, results))
    if args.plot:
        plot(args.plot, f"{args.spec} at {size}x{size} on {device}", results)
        print(f"wrote {args.plot}")
    return 0


def report(spec: str, size: int, batches: tuple[int, ...], results: list[Result]) -> str:
    """The table of every engine and precision, then the fastest passing one at each batch size."""
    head = f"{'engine':<12} {'precision':<9} {'start-up':>9} " + "".join(
        f"{f'batch {b} ms':>14} {'img/s':>9} " for b in batches) + " check against eager fp32"
    lines = [head]
    for r in results:
        if r.skipped:
            lines.append(f"{r.engine:<12} {r.precision:<9} {'-':>9} " + "".join(f"{'-':>14} {'-':>9} " for _ in batches)
                         + f" skipped: {r.skipped}")
            continue
        cells = "".join(f"{r.seconds[b] * 1e3:>14.1f} {b / r.seconds[b]:>9.1f} " for b in batches)
        lines.append(f"{r.engine:<12} {r.precision:<9} {r.startup_s:>8.1f}s {cells} {r.check}")
    for b in batches:
        ok = [r for r in results if r.passed and b in r.seconds]
        if not ok:
            lines.append(f"batch {b}: no engine passed the output check")
            continue
        best = min(ok, key=lambda r: r.seconds[b])
        lines.append(f"fastest at batch {b}: {best.engine} {best.precision} ({best.seconds[b] * 1e3:.1f} ms): "
                     f"build_model({spec!r}, init='none', weights=state_dict, optimize='inference', "
                     f"precision={best.precision!r}, engine={best.engine!r}"
                     + (", calibration=batches" if best.precision == "int8" else "") + ")")
    return "\n".join(lines)


def plot(path: str, title: str, results: list[Result]) -> None:
    """Latency against batch size, one line per engine and precision, written atomically as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import atomic_write
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        if r.seconds:
            bs = sorted(r.seconds)
            ax.plot(bs, [r.seconds[b] * 1e3 for b in bs], marker="o",
                    label=f"{r.engine} {r.precision}" + ("" if r.passed else " (check failed)"))
    ax.set_xlabel("batch size")
    ax.set_ylabel("latency per batch (ms)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)


def calibration_batches(folder: str | Path, size: int, images: int = 64, batch: int = 8,
                        spec: ResNetSpec | None = None) -> list[torch.Tensor]:
    """Up to `images` images of an image folder, spread evenly over its files, at the eval transform, normalized with
    the spec's input mean and std (ImageNet's without a spec)."""
    import torch

    from ..train.data import MEAN, STD, load_image, normalize, scan_split, transforms
    samples = scan_split(folder, "calibration").samples
    step = max(1, len(samples) // images)
    chosen = samples[::step][:images]
    _, evaluation = transforms(size)
    stacked = torch.stack([evaluation(load_image(p)) for p, _ in chosen])
    mean_std = (spec.eval_transform.mean, spec.eval_transform.std) if spec is not None else (MEAN, STD)
    return [normalize(stacked[i:i + batch], torch.device("cpu"), mean_std=mean_std)
            for i in range(0, len(stacked), batch)]


def _interleaved(fns: dict[tuple[str, str], Callable[[], object]], repeats: int) -> dict[tuple[str, str], list[float]]:
    """Seconds per call of each fn after one warm-up call, in alternating order (ABC, CBA, ...)."""
    import torch
    names = list(fns)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in names}
    with torch.inference_mode():
        for k in names:
            fns[k]()  # warm-up; inductor compiles each new batch size here
        for i in range(repeats):
            for k in names if i % 2 == 0 else names[::-1]:
                t0 = time.perf_counter()
                fns[k]()
                times[k].append(time.perf_counter() - t0)
    return times


def _int_list(text: str) -> tuple[int, ...]:
    from .common import positive_int
    return tuple(positive_int(t) for t in text.split(","))


def _word_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _choice_list(choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    import argparse

    def parse(text: str) -> tuple[str, ...]:
        words = _word_list(text)
        bad = [w for w in words if w not in choices]
        if bad or not words:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(choices)}, got {text!r}")
        return tuple(words)
    return parse
