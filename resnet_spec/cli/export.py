"""resnet-spec export: a model as TorchScript, torch.export, ONNX, safetensors, a state_dict or a Hugging Face folder,
checked by reading it back."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ..errors import InputError
from ..tools.export import DTYPES, EXPORTERS
from . import weights as _weights
from .common import UsageError

if TYPE_CHECKING:
    from argparse import Namespace

    import torch

    from ..model.weights import Weights
    from ..spec.types import ResNetSpec
    from .common import Subparsers

# The --format choices: the exporters' table (importing it imports no torch, so `--help` stays fast).
FORMATS = tuple(EXPORTERS)


def register(sub: Subparsers) -> None:
    from .common import add_command, num_classes, positive_int, seed
    p = add_command(sub, "export", "Write a model as TorchScript, torch.export, ONNX, safetensors, a state_dict or a "
                    "Hugging Face folder, checked by loading it back.",
                    "  resnet-spec export resnet50 --out resnet50.onnx --weights resnet50_tv.pth\n"
                    "  resnet-spec export --weights runs/digits --out digits.pt2\n"
                    "  resnet-spec export resnet18 --format torchscript --out resnet18.ts --input-size 64\n"
                    "  resnet-spec export resnet18 --out r18.safetensors --dtype bfloat16\n"
                    "  resnet-spec export resnet50 --out hf_resnet50 --format hf",
                    description=(
                        "Export a spec's model (seeded random weights, or --weights) to a deployment format, the "
                        "format taken from the --out name unless --format says it. The export is loaded back and "
                        "compared with the torch model before it is written atomically; ONNX is run with onnxruntime "
                        "at two batch sizes and, with dynamic height and width, at two image sizes. Without a spec, "
                        "--weights must be a resnet-spec checkpoint or run folder, which carries its spec."))
    p.add_argument("spec", metavar="FILE|NAME", nargs="?",
                   help="a spec file, or the name of a shipped spec (default: the spec --weights carries)")
    p.add_argument("--format", choices=FORMATS, help="what to write (default: from the --out name)")
    p.add_argument("--out", required=True, metavar="FILE", help="the file (or, for hf, the folder) to write")
    p.add_argument("--weights", metavar="CKPT", help="a checkpoint, train run folder, state_dict (.pt/.pth, any common "
                   "wrapping), .safetensors file or Hugging Face folder (default: seeded random weights)")
    p.add_argument("--ignore-spec", action="store_true",
                   help="load --weights even if the spec they were saved from differs from SPEC")
    p.add_argument("--static-shape", action="store_true",
                   help="onnx: fix height and width to --input-size (the batch axis stays dynamic)")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="weights' dtype, for torchscript, pt2, safetensors and state_dict (default: float32)")
    p.add_argument("--num-classes", type=num_classes, metavar="N", help="resize the classifier to N outputs")
    p.add_argument("--input-size", type=positive_int, metavar="N",
                   help="input height and width used to trace and check (default: the spec's)")
    p.add_argument("--seed", type=seed, default=0,
                   help="seed of the random weights and check inputs, 0 to 2**63-1 (default: 0)")
    p.set_defaults(func=run)


def run(args: Namespace) -> int:
    from ..fileio import check_writable
    from ..tools.export import check_format, format_for
    from .common import check_input_size
    if args.format is None:
        args.format = format_for(args.out)
        if args.format is None:
            raise UsageError(f"cannot tell the format from the name {args.out}; give --format")
    check_format(args.format, args.out, args.dtype)
    spec, weights = _weights.spec_and_weights(args.spec, args.weights, args.ignore_spec, args.num_classes)
    if args.format != "hf":
        check_writable(args.out)
    check_input_size(spec, args.input_size, "--input-size")

    import torch

    from ..model.factory import build_model
    from ..tools.export import export
    if weights is not None:
        model = build_model(spec, init="none", weights=_matching_weights(spec, weights))
    else:
        print("no --weights given: exporting the seeded random initialisation", file=sys.stderr)
        torch.manual_seed(args.seed)
        model = build_model(spec)
    size = args.input_size or spec.input_size
    check = export(model, spec, args.format, args.out, size, args.seed, static_shape=args.static_shape,
                   dtype=args.dtype)
    files = [check.path] if check.path.is_file() else list(check.path.iterdir())
    mb = sum(f.stat().st_size for f in files) / 2**20
    print(f"wrote {check.path} ({check.format}, {mb:.1f} MB)")
    if check.format in ("state_dict", "safetensors"):
        print(f"checked: {check.check}")
    else:
        print(f"checked: {check.check}: max abs diff {check.max_abs:.3g}, max rel diff {check.max_rel:.3g} "
              f"(tolerance {check.tolerance:g}, relative to max |torch output|)")
    return 0


def _matching_weights(spec: ResNetSpec, weights: Weights) -> dict[str, torch.Tensor]:
    """The weights' state_dict; a key or shape that does not match the spec is shown, then refused."""
    from ..model.build import meta_model
    from ..tools.compare import key_diff
    from .compare import key_table
    state, path = weights.state_dict, weights.source
    keys = key_diff(meta_model(spec).state_dict(), state)
    if not keys.same:
        print("\n".join(key_table(keys, theirs="checkpoint")), file=sys.stderr)
        raise InputError(f"{path}: weights do not match the spec: {len(keys.missing)} missing, "
                           f"{len(keys.extra)} extra, {len(keys.mismatched)} of another shape (table above)")
    return state
