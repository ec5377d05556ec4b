"""resnet-spec compare: prove a spec equal to a torchvision or timm model (keys, shapes, outputs)."""
from __future__ import annotations

import json
import sys
from argparse import ArgumentTypeError
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from argparse import Namespace

    from ..tools.compare import KeyDiff, OutputDiff
    from .common import Subparsers

MAX_ROWS = 40  # rows of the key table shown in text; --format json lists every one


def register(sub: Subparsers) -> None:
    from .common import add_command, device_name, positive_int
    p = add_command(sub, "compare", "Prove a spec equal to a torchvision or timm model (keys, shapes, outputs).",
                    "  resnet-spec compare resnet50 --reference torchvision:resnet50\n"
                    "  resnet-spec compare specs/resnet34.yaml --reference torchvision:resnet34 --dtype float64\n"
                    "  resnet-spec compare my.yaml --reference timm:resnet50d --input-size 64 --format json\n"
                    "  resnet-spec compare my10.yaml --reference torchvision:resnet18 --reference-arg num_classes=10",
                    description=(
                        "Compare a spec's network with a torchvision or timm model: the state_dict keys and shapes, "
                        "then, after loading the reference's random weights strictly (norm weights and statistics "
                        "randomised), the outputs of both on one random input. Exit 0 when they are the same network "
                        "within tolerance, 1 when they differ, 2 for trouble (a bad spec, reference or argument), "
                        "as diff(1)."))
    p.add_argument("spec", metavar="FILE|NAME", help="a spec file, or the name of a shipped spec")
    p.add_argument("--reference", required=True, metavar="LIB:NAME", help="torchvision:NAME or timm:NAME")
    p.add_argument("--reference-arg", action="append", type=reference_arg, metavar="KEY=VALUE",
                   help="an argument of the reference's constructor, repeatable: num_classes=10, output_stride=16 "
                        "(values read as int, float, true/false, else text)")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="float64 makes the output check exact up to rounding (default: float32)")
    p.add_argument("--input-size", type=positive_int, metavar="N", help="input height and width (default: the spec's)")
    p.add_argument("--batch", type=positive_int, default=2, metavar="N",
                   help="batch size of the random input (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the input (default: 0)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.set_defaults(func=run)


def reference_arg(text: str) -> tuple[str, bool | int | float | str]:
    """argparse type for --reference-arg KEY=VALUE: the value read as a bool, int, float, or else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise ArgumentTypeError(f"expected KEY=VALUE with KEY a Python name (e.g. num_classes=10), got {text!r}")
    return key, parse_value(value)


def parse_value(text: str) -> bool | int | float | str:
    """true/false as bools, then an int, then a float, else the text itself."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def run(args: Namespace) -> int:
    """Exit 0 for the same network, 1 for different ones, 2 for trouble (bad input), as diff(1) and cmp(1)."""
    from ..errors import ResNetSpecError, SpecError
    from .common import describe
    try:
        return _compare(args)
    except SpecError as e:
        for rec in e.errors:
            print(rec, file=sys.stderr)
    except ResNetSpecError as e:  # InputError, LimitError, OutputError
        print(f"resnet-spec compare: error: {describe(e)}", file=sys.stderr)
    return 2


def _compare(args: Namespace) -> int:
    from .build import _device
    device = _device(args.device)  # first: a device that is not there is bad usage, found before any work
    from ..tools.compare import parse_reference
    ref = parse_reference(args.reference)
    kwargs = dict(args.reference_arg or [])
    from ..api import load_spec
    spec = load_spec(args.spec)

    import torch

    from ..tools.compare import compare_to_model, randomise_norms_, reference_model
    dtype = getattr(torch, args.dtype)
    theirs = reference_model(ref, kwargs)
    randomise_norms_(theirs, args.seed)
    size = args.input_size or spec.input_size
    keys, out = compare_to_model(spec, theirs, size, args.batch, device, dtype, args.seed)
    same = keys.same and out is not None and out.same
    if args.format == "json":
        print(json.dumps(_as_json(spec.name, str(ref), keys, out, same), indent=2))
    else:
        print(_as_text(spec.name, str(ref), keys, out, same))
    return 0 if same else 1


def _shape(s: tuple[int, ...] | None) -> str:
    return "-" if s is None else "x".join(map(str, s)) or "scalar"


def _as_text(name: str, ref: str, keys: KeyDiff, out: OutputDiff | None, same: bool) -> str:
    lines = [f"{name} vs {ref}",
             f"state_dict: {keys.ours} keys in the spec's model, {keys.theirs} in the reference: "
             f"{len(keys.missing)} missing, {len(keys.extra)} extra, {len(keys.mismatched)} of another shape"]
    if out is None:  # the keys differ (compare_to_model compares outputs only when they match)
        lines += key_table(keys)
        lines.append("outputs not compared: the reference's weights do not load strictly")
    else:
        lines.append("weights: the reference's loaded strictly (norm weights and running statistics randomised)")
        lines.append(f"outputs ({out.dtype}, {out.device}, input {_shape(out.input_shape)}): "
                     + (f"max abs diff {out.max_abs:.3g}, max rel diff {out.max_rel:.3g} "
                        f"(tolerance {out.tolerance:g}, relative to max |reference output|)"
                        if out.shapes_match else "output shapes differ"))
        if out.first_difference:
            module, rel = out.first_difference
            lines.append(f"first difference: the output of {module} (max rel diff {rel:.3g})")
    lines.append("same network" if same else "DIFFERENT networks")
    return "\n".join(lines)


def key_table(keys: KeyDiff, theirs: str = "reference") -> list[str]:
    """The key diff as table lines (tools.compare.key_table), pointing at --format json for the rest."""
    from ..tools.compare import key_table as table
    lines = table(keys, theirs, MAX_ROWS)
    if len(lines) > MAX_ROWS + 1:
        lines[-1] += " (--format json lists them all)"
    return lines


def _as_json(name: str, ref: str, keys: KeyDiff, out: OutputDiff | None, same: bool) -> dict[str, Any]:
    return {
        "spec": name, "reference": ref, "same": same,
        "keys": {"spec": keys.ours, "reference": keys.theirs,
                 "missing": [{"key": k, "shape": list(s)} for k, s in keys.missing],
                 "extra": [{"key": k, "shape": list(s)} for k, s in keys.extra],
                 "mismatched": [{"key": k, "spec": list(a), "reference": list(b)} for k, a, b in keys.mismatched]},
        "outputs": None if out is None else {
            "dtype": out.dtype, "device": out.device, "input_shape": list(out.input_shape),
            "shapes_match": out.shapes_match, "max_abs_diff": out.max_abs, "max_rel_diff": out.max_rel,
            "tolerance": out.tolerance, "within_tolerance": out.same,
            "first_difference": None if out.first_difference is None else {
                "module": out.first_difference[0], "max_rel_diff": out.first_difference[1]}},
    }
