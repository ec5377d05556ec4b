"""resnet-spec export: a spec's model as TorchScript, ONNX, safetensors or a state_dict, checked by reading it back."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ..errors import InputError
from ..tools.export import EXPORTERS

if TYPE_CHECKING:
    from argparse import Namespace

    import torch

    from ..spec.types import ResNetSpec
    from .common import Subparsers

# The --format choices: the exporters' table (importing it imports no torch, so `--help` stays fast).
FORMATS = tuple(EXPORTERS)


def register(sub: Subparsers) -> None:
    from .common import add_command, positive_int
    p = add_command(sub, "export", "Write a spec's model as TorchScript, ONNX, safetensors or a state_dict, checked.",
                    "  resnet-spec export resnet50 --format onnx --out resnet50.onnx --weights run/best.pt\n"
                    "  resnet-spec export resnet18 --format torchscript --out resnet18.ts --input-size 64\n"
                    "  resnet-spec export specs/resnet34.yaml --format safetensors --out resnet34.safetensors",
                    description=(
                        "Export a spec's model (seeded random weights, or --weights) to a deployment format. The "
                        "export is loaded back and compared with the torch model before the file is written "
                        "atomically; ONNX is run with onnxruntime at two batch sizes on its dynamic batch axis."))
    p.add_argument("spec", metavar="FILE|NAME", help="a spec file, or the name of a shipped spec")
    p.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--weights", metavar="CKPT", help="a resnet-spec checkpoint, a plain state_dict (.pt) or "
                   ".safetensors file whose keys and shapes match the spec (default: seeded random weights)")
    p.add_argument("--num-classes", type=positive_int, metavar="N", help="resize the classifier to N outputs")
    p.add_argument("--input-size", type=positive_int, metavar="N",
                   help="input height and width used to trace and check (default: the spec's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and check inputs (default: 0)")
    p.set_defaults(func=run)


def run(args: Namespace) -> int:
    from ..api import load_spec
    from ..fileio import check_writable
    from ..spec.types import with_num_classes
    spec = load_spec(args.spec)
    if args.num_classes is not None:
        spec = with_num_classes(spec, args.num_classes)
    check_writable(args.out)

    import torch

    from ..model.factory import build_model
    from ..tools.export import export
    if args.weights:
        model = build_model(spec, init="none", weights=_matching_weights(spec, args.weights))
    else:
        print("no --weights given: exporting the seeded random initialisation", file=sys.stderr)
        torch.manual_seed(args.seed)
        model = build_model(spec)
    size = args.input_size or spec.input_size
    check = export(model, spec, args.format, args.out, size, args.seed)
    mb = check.path.stat().st_size / 2**20
    print(f"wrote {check.path} ({check.format}, {mb:.1f} MB)")
    if check.format in ("state_dict", "safetensors"):
        print(f"checked: {check.check}")
    else:
        print(f"checked: {check.check}: max abs diff {check.max_abs:.3g}, max rel diff {check.max_rel:.3g} "
              f"(tolerance {check.tolerance:g}, relative to max |torch output|)")
    return 0


def _matching_weights(spec: ResNetSpec, path: str) -> dict[str, torch.Tensor]:
    """The checkpoint's state_dict; a key or shape that does not match the spec is shown, then refused."""
    from ..model.build import meta_model
    from ..tools.compare import key_diff
    from .compare import key_table
    state = _read_state_dict(path)
    keys = key_diff(meta_model(spec).state_dict(), state)
    if not keys.same:
        print("\n".join(key_table(keys, theirs="checkpoint")), file=sys.stderr)
        raise InputError(f"{path}: weights do not match the spec: {len(keys.missing)} missing, "
                           f"{len(keys.extra)} extra, {len(keys.mismatched)} of another shape (table above)")
    return state


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    import torch
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file as load_safetensors
        except ImportError:
            raise InputError('reading .safetensors needs safetensors: pip install "resnet-spec[export]"') from None
        try:
            return load_safetensors(path)
        except Exception as e:  # a missing, truncated or foreign file: unusable input, one line
            raise InputError(f"{path}: not a loadable safetensors file ({str(e).strip()[:200]})") from None
    from ..model.checkpoint import load_file
    obj = load_file(path)
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: holds no state_dict (a mapping of names to tensors)")
    return state
