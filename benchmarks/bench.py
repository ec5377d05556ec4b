"""Speed of resnet-spec models against torchvision's, measured side by side in one process.

    python benchmarks/bench.py [--quick | --smoke] [--device cpu|cuda] [--threads N] [--clock wall|cpu]
                               [--no-compile] [--no-train] [--no-engines | --only-engines] [--models A,B]
                               [--cuda-batch N] [--out benchmarks/results.md]

The engine rows run each engine resnet-spec offers (eager oneDNN, inductor with freezing, onnxruntime, OpenVINO) at
each precision the CPU runs fast (fp32; bf16 with AMX or AVX-512-BF16; int8 with AMX or VNNI), and each of issue 16's
peers on torchvision's own model (fp32: torchvision eager, torch.compile of torchvision with freezing and
channels_last, onnxruntime and OpenVINO on torchvision's ONNX export; bf16: torchvision eager under autocast,
torch.compile, OpenVINO's bf16 hint; int8: onnxruntime's static int8 of torchvision's export on the same calibration
images), at batch 1 and 8, against torchvision eager fp32, with each one's start-up time and its output check against
eager fp32. The goal rows ask, per precision and batch size, that resnet-spec's fastest engine is at least as fast as
the fastest peer (ties within 2% count: the same runtime on the same graph differs by noise alone). The int8 accuracy
row trains the digits model and checks that int8 loses at most 0.5 points of top-1 (benchmarks/int8_digits.py).
The training rows time `train` at fp32 and, on a bf16 CPU, under `--amp bf16`: loop overhead and bf16's speed-up.

Every row times ours and the reference interleaved (ABBA order), after warm-up, and reports medians
and the median of the paired ratios, so drift on a shared, noisy machine hits both sides alike.
Writes the table to benchmarks/results.md and exits 1 when a goal is missed.

--smoke runs every row once at toy sizes (batch 2, 64 px, one repeat; torch.compile and the engine rows on resnet18
only: each engine's start-up, an export, a quantization or a compile, costs seconds whatever the size; the int8
accuracy row on a 2-epoch model of 8 digits per class),
judges no goal, writes nothing unless --out is given, and exits 1 only if a row fails to run.
The test suite runs it (tests/test_benchmarks.py), so the benchmark cannot rot unnoticed.
"""
# ruff: noqa: E402  (OMP_WAIT_POLICY is set before torch is imported)
from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: torch, onnxruntime and OpenVINO share the cores in this process,
# and a spinning pool of one slows the next by 2-10x on a 2-core machine. Read when torch loads, so set first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import functools
import io
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torchvision

from resnet_spec import build_model, load_spec
from resnet_spec.fileio import atomic_write

if TYPE_CHECKING:
    from resnet_spec.train.loop import Run, TrainConfig

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("resnet18", "resnet50", "resnext50_32x4d")
BATCH, SIZE = 8, 224


@dataclass(frozen=True)
class Row:
    """One line of the results table: what was timed, the two medians, the ratio and the goal."""

    section: str
    model: str
    ours: str
    ref: str
    ratio: str
    goal: str
    ok: bool | None  # None: reported, no goal
    note: str = ""
    start: str = "-"  # compile or warm-up time before the first output


@dataclass(frozen=True)
class Settings:
    """How hard to measure."""

    warmup: int
    repeats: int
    build_repeats: int
    validate_runs: int
    compile: bool
    clock: Callable[[], float] = time.perf_counter
    batch: int = BATCH
    size: int = SIZE
    compile_models: tuple[str, ...] = MODELS
    train_size: int = 112
    engine_batches: tuple[int, ...] = (1, 8)
    engine_models: tuple[str, ...] = MODELS


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved(fns: dict[str, Callable[[], object]], warmup: int, repeats: int,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call of each fn (by `clock`): warm-up, then repeats, each in a new seeded random order.

    Not ABC, CBA, ...: there the first and last fns of the list run twice in a row at every turn, with their
    weights still in the caches, which made the last row of a long list (onnxruntime int8 at batch 1) about 5%
    faster than the same graph in the middle of it."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    order = random.Random(0)
    for _ in range(repeats):
        for k in order.sample(names, len(names)):
            t0 = clock()
            fns[k]()
            times[k].append(clock() - t0)
    return times


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median of a[i] / b[i]: each pair ran back to back, so slow spells cancel."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def ms(ts: list[float]) -> str:
    return f"{statistics.median(ts) * 1e3:.1f} ms"


def randomize_batchnorms(model: torch.nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial statistics and affine terms, so folding them is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: the error relative to the output's scale."""
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def forward_rows(name: str, s: Settings) -> list[Row]:
    """Eager ours vs torchvision, optimized ours vs torchvision eager, and (optionally) compiled."""
    spec = load_spec(name)
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)().eval()
    randomize_batchnorms(ref, seed=1)
    sd = ref.state_dict()
    ours = build_model(spec).eval()
    ours.load_state_dict(sd, strict=True)
    opt = build_model(spec, init="none", weights={k: v.clone() for k, v in sd.items()}, optimize="inference")
    x = torch.randn(s.batch, 3, s.size, s.size, generator=torch.Generator().manual_seed(2))
    notes: dict[str, str] = {}
    fast: dict[str, Callable[[], object]] = {"ref": lambda: ref(x), "opt": lambda: opt(x)}
    with torch.inference_mode():
        y_ref, y_ours, y_opt = ref(x), ours(x), opt(x)
        if s.compile and name in s.compile_models:
            try:
                t0 = time.perf_counter()
                comp = build_model(spec, init="none", weights={k: v.clone() for k, v in sd.items()},
                                   optimize="inference", compile=True)
                y_comp = comp(x)
                notes["compile"] = (f"compiled in {time.perf_counter() - t0:.0f} s; "
                                    f"max rel. diff {rel_diff(y_comp, y_ref):.1e}")
                fast["compile"] = lambda: comp(x)
            except Exception as e:  # a missing C++ toolchain must not hide the other rows
                notes["compile"] = f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
        # Two loops: the eager pair alone, so neither side of the 2% comparison follows a different model.
        # Twice the repeats: its 2% window is the tightest goal.
        times = interleaved({"ref": lambda: ref(x), "ours": lambda: ours(x)}, s.warmup, 2 * s.repeats, s.clock)
        fast_times = interleaved(fast, s.warmup, s.repeats, s.clock)
    same = torch.equal(y_ours, y_ref)
    eager = paired_ratio(times["ours"], times["ref"])
    opt_speed = paired_ratio(fast_times["ref"], fast_times["opt"])
    opt_diff = rel_diff(y_opt, y_ref)
    rows = [
        Row("eager forward", name, ms(times["ours"]), ms(times["ref"]), f"{eager:.3f}", "0.98-1.02 (time ratio)",
            0.98 <= eager <= 1.02 and same, "outputs bit-identical" if same else "OUTPUTS DIFFER"),
        Row("optimized (BN fold + channels_last)", name, ms(fast_times["opt"]), ms(fast_times["ref"]),
            f"{opt_speed:.2f}x",
            ">= 1.20x faster, rel. diff <= 1e-4", opt_speed >= 1.20 and opt_diff <= 1e-4,
            f"max rel. diff {opt_diff:.1e}"),
    ]
    if "compile" in fast:
        speed = paired_ratio(fast_times["ref"], fast_times["compile"])
        rows.append(Row("optimized + torch.compile", name, ms(fast_times["compile"]), ms(fast_times["ref"]),
                        f"{speed:.2f}x", "reported", None, notes["compile"]))
    elif "compile" in notes:
        rows.append(Row("optimized + torch.compile", name, "-", ms(fast_times["ref"]), "-", "reported", None,
                        notes["compile"]))
    return rows


# Issue 16's peers: what a user would run instead of resnet-spec, each on torchvision's own model (not on our folded
# one). Per precision: (name, how it is built). The runtimes are driven by the same engine code as ours, so threads,
# spinning and session options are the same on both sides; what differs is the model they are given.
PEERS: dict[str, tuple[str, ...]] = {
    "fp32": ("torchvision eager", "torchvision + torch.compile", "onnxruntime (torchvision export)",
             "openvino (torchvision export)"),
    "bf16": ("torchvision eager + autocast", "torchvision + torch.compile", "openvino (torchvision export)"),
    "int8": ("onnxruntime (torchvision export)",),
}
# Ties: two routes to the same runtime on the same graph (onnxruntime on our export and on torchvision's) differ by
# noise alone, so "at least as fast" counts a peer up to 2% faster as a tie. The ratio column shows the figure.
TIE = 0.98


def build_peer(peer: str, precision: str, ref: torch.nn.Module, example: torch.Tensor,
               calib: list[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A peer's callable on a copy of the torchvision model `ref` (eval mode)."""
    import copy

    from resnet_spec.model.engines import ENGINES
    if peer == "torchvision eager":
        return ref
    model = copy.deepcopy(ref).eval().requires_grad_(False)
    if peer == "torchvision eager + autocast":
        def autocast(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x).float()
        return autocast
    engine = {"torchvision + torch.compile": "inductor", "onnxruntime (torchvision export)": "onnxruntime",
              "openvino (torchvision export)": "openvino"}[peer]
    if engine == "inductor":  # torch.compile with freezing, weights and input in channels_last
        model = model.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        return ENGINES[engine].build(model, precision, example, calib)


def peer_missing(peer: str) -> str | None:
    """The package a peer needs and cannot find, or None."""
    from resnet_spec.model.engines import ENGINES
    for engine in ("onnxruntime", "openvino"):
        if peer.startswith(engine):
            return ENGINES[engine].missing()
    return None


def engine_rows(name: str, s: Settings) -> list[Row]:
    """Every engine resnet-spec offers at every precision this CPU runs fast, and every peer of issue 16 on
    torchvision's model, timed interleaved against torchvision eager fp32 at each batch size; then, per precision and
    batch, the goal row: resnet-spec's fastest engine against the fastest peer. Each engine and peer is built once;
    its start-up column is the build (export, quantization, compile), the output check and the first call."""
    from resnet_spec.model.engines import AUTO, ENGINES, InferenceModel, accelerate
    from resnet_spec.model.optimize import PRECISIONS, OutputCheck, compare_outputs, cpu_support
    # Every ResNet shares one forward code object, and dynamo keeps at most recompile_limit graphs per code object
    # before it silently runs eager: start each network's inductor rows from an empty cache, with room for every
    # precision and batch size.
    torch._dynamo.reset()
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 16)
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)().eval()
    randomize_batchnorms(ref, seed=1)
    sd = ref.state_dict()
    check = torch.randn(2, 3, s.size, s.size, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = ref(check)
    # Random calibration images: they time int8 correctly; its accuracy is measured on digits (int8_digits.py).
    calib = [torch.randn(8, 3, s.size, s.size, generator=torch.Generator().manual_seed(10 + i)) for i in range(4)]
    built: dict[str, InferenceModel] = {}
    peers: dict[str, tuple[str, str, Callable[[torch.Tensor], torch.Tensor], float, OutputCheck]] = {}
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    compile_here = s.compile and name in s.compile_models
    for precision in PRECISIONS:
        why = cpu_support(precision)
        if why:
            skipped[precision] = why
            rows.append(Row(f"{precision} (every engine and peer)", name, "-", "-", "-", "reported", None,
                            f"not run: {why}"))
            continue
        for engine in ENGINES:
            if precision not in ENGINES[engine].precisions:
                continue
            missing = ENGINES[engine].missing()
            if missing or (engine == "inductor" and not compile_here):
                note = f"{missing} not installed" if missing else "skipped in this mode (compile time)"
                rows.append(Row(f"{precision} {engine}", name, "-", "-", "-", "reported", None, note))
                continue
            model = build_model(name, init="none", weights={k: v.clone() for k, v in sd.items()})
            built[f"{engine} {precision}"] = accelerate(model, precision=precision, engine=engine,
                                                        calibration=calib, check_batch=check, strict=False)
        for peer in PEERS[precision]:
            missing = peer_missing(peer)
            if missing or ("compile" in peer and not compile_here):
                note = f"{missing} not installed" if missing else "skipped in this mode (compile time)"
                rows.append(Row(f"peer {precision} {peer}", name, "-", "-", "-", "reported", None, note))
                continue
            t0 = time.perf_counter()
            fn = build_peer(peer, precision, ref, check, calib)
            with torch.inference_mode():
                out = fn(check)
            startup = time.perf_counter() - t0
            peers[f"peer {precision} {peer}"] = (peer, precision, fn, startup,
                                                 compare_outputs(out, expected, precision))
    for batch in s.engine_batches:
        x = torch.randn(batch, 3, s.size, s.size, generator=torch.Generator().manual_seed(2))
        fns: dict[str, Callable[[], object]] = {"tv": functools.partial(ref, x)}
        fns.update({k: functools.partial(m, x) for k, m in built.items()})
        # The torchvision eager peer is the reference itself: timed once, as "tv".
        fns.update({k: functools.partial(p[2], x) for k, p in peers.items() if p[0] != "torchvision eager"})
        with torch.inference_mode():
            for fn in fns.values():
                fn()  # inductor compiles again for a batch size it has not seen
            times = interleaved(fns, s.warmup, s.repeats, s.clock)
        times.update({k: times["tv"] for k, p in peers.items() if p[0] == "torchvision eager"})
        med = {k: statistics.median(v) for k, v in times.items()}
        for key, m in built.items():
            rows.append(Row(f"{m.precision} {m.engine}", name, ms(times[key]), ms(times["tv"]),
                            f"{med['tv'] / med[key]:.2f}x", "reported", None, f"batch {batch}; {m.check}",
                            f"{m.startup_s:.1f} s"))
        for key, (peer, precision, _, startup, checked) in peers.items():
            rows.append(Row(f"peer {precision} {peer}", name, ms(times[key]), ms(times["tv"]),
                            f"{med['tv'] / med[key]:.2f}x", "reported", None, f"batch {batch}; {checked}",
                            f"{startup:.1f} s"))
        for precision in PRECISIONS:
            goal = (f"at least as fast as onnxruntime int8 on the same calibrated model (ties within "
                    f"{100 * (1 - TIE):.0f}%)" if precision == "int8" else
                    f"at least as fast as the fastest {precision} peer (ties within {100 * (1 - TIE):.0f}%)")
            section = f"resnet-spec {precision} vs fastest peer"
            if precision in skipped:
                rows.append(Row(section, name, "-", "-", "-", goal, None,
                                f"batch {batch}; not run: {skipped[precision]}"))
                continue
            ours = {m.engine: k for k, m in built.items() if m.precision == precision and m.check.passed}
            theirs = {p[0]: k for k, p in peers.items() if p[1] == precision and p[4].passed}
            if not ours or not theirs:
                why = "no engine of ours passed its output check" if not ours else "no peer passed it"
                rows.append(Row(section, name, "-", "-", "-", goal, None, f"batch {batch}; not run: {why}"))
                continue
            # The fastest of each side by median; their ratio is the median of the pairs' ratios, as everywhere.
            best = min(ours, key=lambda e: med[ours[e]])
            rival = min(theirs, key=lambda p: med[theirs[p]])
            ratio = paired_ratio(times[theirs[rival]], times[ours[best]])
            auto = next((e for e in AUTO[precision] if e in ours), None)
            auto_note = (f"engine='auto' picks {auto}: {med[ours[best]] / med[ours[auto]]:.2f} x the fastest "
                         "engine's speed" if auto else "engine='auto' picks none that ran")
            rows.append(Row(section, name, f"{ms(times[ours[best]])} ({best})",
                            f"{ms(times[theirs[rival]])} ({rival})", f"{ratio:.2f}x", goal, ratio >= TIE,
                            f"batch {batch}; ratio = the peer's time / ours; {auto_note}; fastest of ours "
                            f"{med['tv'] / med[ours[best]]:.2f}x torchvision eager fp32"))
    return rows


def int8_accuracy_row(smoke: bool) -> Row:
    """The digits model's val top-1 after int8 quantization calibrated on its training images, against fp32's
    (benchmarks/int8_digits.py: the training, the quantization and the count)."""
    import tempfile

    import int8_digits  # benchmarks/int8_digits.py, beside this script

    from resnet_spec.model.optimize import cpu_support
    section, model = "int8 accuracy (digits)", "resnet10_cifar"
    goal = f"int8 top-1 within {int8_digits.GOAL_POINTS} points of fp32"
    why = cpu_support("int8")
    if why:
        return Row(section, model, "-", "-", "-", goal, None, f"not run: {why}")
    with tempfile.TemporaryDirectory() as tmp:
        r = int8_digits.measure(Path(tmp), epochs=2 if smoke else 15, per_class=8 if smoke else None)
    return Row(section, model, f"{100 * r.int8_top1:.2f}%", f"{100 * r.fp32_top1:.2f}%",
               f"{100 * (r.int8_top1 - r.fp32_top1):+.2f} pt", goal, r.met,
               f"int8 ({r.engine}) against fp32 eager on {r.images} held-out val images; calibrated on "
               f"{r.calibration_images} train images; {r.disagreements} images change class; model trained "
               f"{r.epochs} epochs at {int8_digits.IMAGE_SIZE} px ({r.train_s:.0f} s)", f"{r.quantize_s:.1f} s")


def build_rows(name: str, s: Settings) -> list[Row]:
    """Building to load weights (meta + assign) and building with random init, against torchvision."""
    spec_file = str(ROOT / "specs" / f"{name}.yaml")
    ctor = getattr(torchvision.models, name)
    sd = ctor().state_dict()
    x = torch.randn(1, 3, 64, 64)

    def ref_load() -> torch.nn.Module:
        m = ctor()
        m.load_state_dict(sd)
        return m

    def ours_load() -> torch.nn.Module:  # parses and validates the YAML too, as a user's call would
        return build_model(spec_file, init="none", weights=sd)

    with torch.inference_mode():
        same_load = torch.equal(ours_load().eval()(x), ref_load().eval()(x))
    t_load = interleaved({"ref": ref_load, "ours": ours_load}, 1, s.build_repeats, s.clock)
    load_speed = paired_ratio(t_load["ref"], t_load["ours"])

    spec = load_spec(name)

    def seeded(fn: Callable[[], torch.nn.Module]) -> Callable[[], torch.nn.Module]:
        def run() -> torch.nn.Module:
            torch.manual_seed(0)
            return fn()
        return run

    ref_rand, ours_rand = seeded(ctor), seeded(lambda: build_model(spec))
    a, b = ours_rand().state_dict(), ref_rand().state_dict()
    same_init = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    t_rand = interleaved({"ref": ref_rand, "ours": ours_rand}, 1, s.build_repeats, s.clock)
    rand = paired_ratio(t_rand["ours"], t_rand["ref"])
    return [
        Row("build to load weights", name, ms(t_load["ours"]), ms(t_load["ref"]), f"{load_speed:.1f}x",
            ">= 5x faster, identical output", load_speed >= 5 and same_load,
            "init='none' from the YAML file vs constructor + load_state_dict; "
            + ("outputs identical" if same_load else "OUTPUTS DIFFER")),
        Row("build with random init", name, ms(t_rand["ours"]), ms(t_rand["ref"]), f"{rand:.3f}",
            "<= 1.05 (time ratio)", rand <= 1.05 and same_init,
            "seeded weights identical" if same_init else "SEEDED WEIGHTS DIFFER"),
    ]


def validate_row(s: Settings) -> Row:
    """`resnet-spec validate specs/*.yaml` in a fresh process: wall time, and whether torch got imported."""
    specs = sorted(str(p) for p in (ROOT / "specs").glob("*.yaml"))
    script = Path(sys.executable).parent / "resnet-spec"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "resnet_spec"]
    walls, cpus, codes = [], [], set()
    for _ in range(s.validate_runs):
        c0, t0 = _children_cpu(), time.perf_counter()
        codes.add(subprocess.run(cmd + ["validate", *specs], capture_output=True).returncode)
        walls.append(time.perf_counter() - t0)
        cpus.append(_children_cpu() - c0)
    probe = ("import sys; from resnet_spec.cli.main import main; rc = main(['validate', *sys.argv[1:]]); "
             "print('TORCH' if 'torch' in sys.modules else 'NOTORCH', rc, file=sys.stderr)")
    err = subprocess.run([sys.executable, "-c", probe, *specs], capture_output=True, text=True).stderr
    torch_free = "NOTORCH 0" in err
    wall = statistics.median(walls)
    return Row("validate (subprocess)", f"{len(specs)} specs", f"{wall * 1e3:.0f} ms", "-", "-",
               "< 0.5 s wall, no torch import", wall < 0.5 and torch_free and codes == {0},
               f"{' '.join(Path(c).name for c in cmd)} validate specs/*.yaml; exit {sorted(codes)}; "
               f"CPU time {statistics.median(cpus) * 1e3:.0f} ms; "
               + ("torch not imported" if torch_free else "TORCH IMPORTED or validation failed"))


def _children_cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cuda_rows(name: str, batch: int, s: Settings) -> list[Row]:
    """Images/s on the GPU: torchvision eager, ours eager, ours optimized, ours optimized under bf16 autocast."""
    dev = torch.device("cuda")
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)().to(dev).eval()
    ours = build_model(load_spec(name)).to(dev).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    opt = build_model(load_spec(name), init="none", weights={k: v.clone() for k, v in ref.state_dict().items()},
                      optimize="inference")
    x = torch.randn(batch, 3, s.size, s.size, device=dev)

    def timed(fn: Callable[[], object], autocast: bool = False) -> Callable[[], object]:
        def run() -> object:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                for _ in range(10):
                    fn()
            torch.cuda.synchronize(dev)
            return None
        return run

    fns = {"ref": timed(lambda: ref(x)), "ours": timed(lambda: ours(x)), "opt": timed(lambda: opt(x)),
           "amp": timed(lambda: opt(x), autocast=True)}
    with torch.inference_mode():
        times = interleaved(fns, max(2, s.warmup), s.repeats)
    ips = {k: 10 * batch / statistics.median(v) for k, v in times.items()}
    labels = {"ours": "eager fp32", "opt": "optimized fp32", "amp": "optimized + bf16 autocast"}
    return [Row(f"cuda {labels[k]}", name, f"{ips[k]:,.0f} img/s", f"{ips['ref']:,.0f} img/s",
                f"{ips[k] / ips['ref']:.2f}x", "reported", None, f"batch {batch}; reference is torchvision eager fp32")
            for k in labels]


# 112 px (Settings.train_size) keeps a repeat short on two cores; the loop's own cost per step is the same at any size.
TRAIN_MODEL, TRAIN_STEPS = "resnet18", 6


def train_loops(run: Run, cfg: TrainConfig, batches: list[tuple[torch.Tensor, torch.Tensor, list[str]]],
                bf16: bool) -> tuple[Callable[[], None], Callable[[], None]]:
    """One epoch of `run` (Run.train_epoch, its loader swapped for `batches`), and the bare loop over the same batches,
    model and optimizer settings: forward (under bf16 autocast if `bf16`), cross-entropy, backward, SGD step."""
    import contextlib

    import torch.nn.functional as F
    model, epochs = run.model, iter(range(cfg.epochs))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def loop() -> None:
        with contextlib.redirect_stderr(io.StringIO()):  # the progress bar
            run.train_epoch(next(epochs))

    def bare() -> None:
        model.train()
        for images, targets, _ in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(images)
            loss = F.cross_entropy(logits.float(), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return loop, bare


def training_rows(s: Settings) -> list[Row]:
    """Images/s of the train command's epoch loop (Run.train_epoch) on in-memory batches, against a bare
    forward + backward + SGD step loop over the same batches, the same model object and the same optimizer settings;
    at fp32 and, on a CPU with AMX or AVX-512-BF16, under bf16 autocast (`train --amp bf16`), with the speed-up of
    bf16 over fp32 for the same loop. The four loops are timed interleaved, so they share the machine's load."""
    import tempfile

    from resnet_spec.model.optimize import cpu_support
    from resnet_spec.train import data, distributed
    from resnet_spec.train.loop import Run, TrainConfig

    classes = tuple(f"c{i}" for i in range(10))
    # Run's DataLoaders are lazy, so these paths are never read: the loader is swapped for in-memory batches.
    batch, size = s.batch, s.train_size
    split = data.Split(Path("-"), classes, tuple((f"-/{i}.png", i % 10) for i in range(batch * TRAIN_STEPS)))
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(batch, 3, size, size, generator=g), torch.randint(0, 10, (batch,), generator=g), [])
               for _ in range(TRAIN_STEPS)]
    no_bf16 = cpu_support("bf16")
    amps = ("none",) if no_bf16 else ("none", "bf16")
    fns: dict[str, Callable[[], object]] = {}
    with tempfile.TemporaryDirectory() as out:
        for amp in amps:
            # cache="off": the DataLoader path is lazy, so the placeholder paths are never read (the in-memory path
            # would decode them at once); the loader is then swapped for the batches above.
            cfg = TrainConfig(spec=TRAIN_MODEL, data="-", out=str(Path(out) / amp), image_size=size, epochs=1000,
                              batch_size=batch, workers=0, lr=0.01, device="cpu", cache="off", amp=amp)
            torch.manual_seed(0)
            run = Run(cfg, load_spec(TRAIN_MODEL), split, split, None, distributed.from_env())
            run.train_loader = batches
            fns[f"loop {amp}"], fns[f"bare {amp}"] = train_loops(run, cfg, batches, bf16=amp == "bf16")
        times = interleaved(fns, 1, max(3, s.build_repeats // 2), s.clock)
    n = batch * TRAIN_STEPS
    ips = {k: n / statistics.median(v) for k, v in times.items()}
    shape = f"{TRAIN_STEPS} steps of batch {batch}, {size}x{size}, per repeat"
    rows = []
    for amp, section in (("none", "training loop (in-memory data)"),
                         ("bf16", "training loop, bf16 autocast (in-memory data)")):
        if amp not in amps:
            rows.append(Row(section, TRAIN_MODEL, "-", "-", "-", "overhead < 10%", None, f"not run: {no_bf16}"))
            continue
        overhead = paired_ratio(times[f"loop {amp}"], times[f"bare {amp}"]) - 1
        rows.append(Row(section, TRAIN_MODEL, f"{ips[f'loop {amp}']:.2f} img/s", f"{ips[f'bare {amp}']:.2f} img/s",
                        f"{100 * overhead:+.1f}%", "overhead < 10%", overhead < 0.10,
                        f"Run.train_epoch (train --amp {amp}) vs bare fwd+bwd+SGD step"
                        + (" under torch.autocast bf16" if amp == "bf16" else "") + f"; {shape}"))
    section = "training bf16 autocast vs fp32"
    if no_bf16:
        rows.append(Row(section, TRAIN_MODEL, "-", "-", "-", "reported", None, f"not run: {no_bf16}"))
    else:
        speed = paired_ratio(times["loop none"], times["loop bf16"])
        bare_speed = paired_ratio(times["bare none"], times["bare bf16"])
        rows.append(Row(section, TRAIN_MODEL, f"{ips['loop bf16']:.2f} img/s", f"{ips['loop none']:.2f} img/s",
                        f"{speed:.2f}x", "reported", None,
                        f"Run.train_epoch with --amp bf16 vs --amp none, same model and batches; bare loops "
                        f"{bare_speed:.2f}x; {shape}"))
    return rows


def machine() -> list[str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    from resnet_spec.model.optimize import cpu_flags
    have = cpu_flags()
    flags = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16",
                                  "amx_int8") if f in have)
    absent = ", ".join(f for f in ("avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8") if f not in have)
    omp = os.environ.get("OMP_WAIT_POLICY", "unset")
    runtimes = []
    for pkg in ("onnxruntime", "openvino"):
        try:
            runtimes.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            runtimes.append(f"{pkg} not installed")
    return [f"CPU: {cpu}; flags: {flags}" + (f"; lacks {absent}" if absent else "")
            + f"; {os.cpu_count()} logical cores; torch threads {torch.get_num_threads()}; OMP_WAIT_POLICY {omp}",
            f"torch {torch.__version__}, torchvision {torchvision.__version__}, {', '.join(runtimes)}, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}",
            f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}"]


def table(rows: list[Row]) -> str:
    head = ("| section | model | ours | reference | ratio | start-up | goal | met | note |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    mark = {True: "yes", False: "**NO**", None: "-"}
    return head + "".join(f"| {r.section} | {r.model} | {r.ours} | {r.ref} | {r.ratio} | {r.start} | {r.goal} "
                          f"| {mark[r.ok]} | {r.note} |\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="few repeats, no torch.compile: noisier")
    mode.add_argument("--smoke", action="store_true",
                      help="every row once at toy sizes; judges no goal, fails only if a row fails to run")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda adds images/s rows on the GPU to the CPU rows")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--threads", type=int, metavar="N", help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="wall time, or process CPU time: steadier on a shared machine, with OMP_WAIT_POLICY=PASSIVE "
                        "so that waiting threads sleep instead of spinning")
    p.add_argument("--no-train", action="store_true", help="skip the training-loop row")
    p.add_argument("--models", default=",".join(MODELS), metavar="A,B",
                   help=f"the networks of the forward, build and engine rows (default: {','.join(MODELS)})")
    p.add_argument("--only-engines", action="store_true", help="run the engine rows alone")
    p.add_argument("--no-engines", action="store_true",
                   help="skip the engine rows (eager, inductor, onnxruntime, OpenVINO at fp32, bf16, int8)")
    p.add_argument("--cuda-batch", type=int, default=128, help="batch size of the CUDA rows (default: 128)")
    p.add_argument("--out", type=Path, help="the markdown table (default: benchmarks/results.md; none with --smoke)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench: --device cuda asked for, but no CUDA device is available", file=sys.stderr)
        return 2
    if args.threads is not None:
        if args.threads < 1:
            print("bench: --threads must be at least 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    if args.smoke:
        s = Settings(warmup=0, repeats=1, build_repeats=1, validate_runs=1, compile=not args.no_compile, clock=clock,
                     batch=2, size=64, compile_models=MODELS[:1], train_size=32, engine_batches=(1, 2),
                     engine_models=MODELS[:1])
    elif args.quick:
        s = Settings(warmup=1, repeats=5, build_repeats=3, validate_runs=3, compile=False, clock=clock)
    else:
        s = Settings(warmup=2, repeats=31, build_repeats=15, validate_runs=9, compile=not args.no_compile, clock=clock)
    out = args.out if args.out is not None or args.smoke else ROOT / "benchmarks" / "results.md"
    header = machine()
    print("\n".join(header), flush=True)
    rows: list[Row] = []
    failed: list[str] = []

    def add(what: str, make: Callable[[], list[Row]]) -> None:
        try:
            new = make()
        except Exception as e:  # one broken row must not hide the others; it still fails the run
            failed.append(what)
            print(f"{what}: FAILED TO RUN: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            return
        for r in new:
            if args.smoke:  # toy sizes say nothing about the goals
                r = replace(r, goal="(smoke)", ok=None)
            print(f"{r.section:<36} {r.model:<16} ours {r.ours:>12}  ref {r.ref:>12}  {r.ratio:>7}  "
                  f"start {r.start:>6}  {'-' if r.ok is None else 'ok' if r.ok else 'MISSED'}  {r.note}", flush=True)
            rows.append(r)

    models = [m for m in args.models.split(",") if m]
    if not args.only_engines:
        add("validate", lambda: [validate_row(s)])
        for name in models:
            add(f"build {name}", lambda name=name: build_rows(name, s))
        for name in models:
            add(f"forward {name}", lambda name=name: forward_rows(name, s))
    if not args.no_engines:
        for name in (m for m in models if m in s.engine_models):
            add(f"engines {name}", lambda name=name: engine_rows(name, s))
        add("int8 accuracy", lambda: [int8_accuracy_row(args.smoke)])
    if args.device == "cuda":
        for name in models:
            add(f"cuda {name}", lambda name=name: cuda_rows(name, args.cuda_batch, s))
    if not args.no_train and not args.only_engines:
        add("training loop", lambda: training_rows(s))
    missed = [r for r in rows if r.ok is False]
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS") if k in os.environ)
    given = argv if argv is not None else sys.argv[1:]
    command = (env + " " if env else "") + "python benchmarks/bench.py" + "".join(f" {a}" for a in given)
    text = (f"# resnet-spec benchmark\n\nCommand: `{command}`  \n" + "  \n".join(header)
            + f"  \nload average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n\n"
            + f"CPU rows: batch {s.batch} (engine rows: batch {', '.join(map(str, s.engine_batches))}), "
            + f"{s.size}x{s.size}, fp32 unless a row says otherwise, torch.inference_mode, {args.clock} clock; "
            + f"medians of {s.repeats} interleaved "
            + f"repeats after {s.warmup} warm-up (eager pair: {2 * s.repeats}; builds: {s.build_repeats}); "
            + "ratios are medians of paired "
            + "ratios.\n\n" + table(rows)
            + f"\nGoals met: {sum(r.ok is True for r in rows)} of {sum(r.ok is not None for r in rows)}.\n"
            + (f"\nRows that failed to run: {', '.join(failed)}.\n" if failed else ""))
    if out is not None:
        atomic_write(out, lambda f: f.write(text.encode()))
        print(f"wrote {out}")
    if failed:
        print(f"{len(failed)} row(s) failed to run: {', '.join(failed)}")
        return 1
    if args.smoke:
        print(f"smoke: all {len(rows)} rows ran")
        return 0
    print(f"{len(missed)} goal(s) missed" if missed else "every goal met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
