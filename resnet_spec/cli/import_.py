"""resnet-spec import: write the spec of a torchvision or timm ResNet, read from its module structure."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from argparse import Namespace

    from .common import Subparsers


def register(sub: Subparsers) -> None:
    from .common import add_command
    p = add_command(sub, "import", "Write the spec of a torchvision, timm or Hugging Face ResNet.",
                    "  resnet-spec import torchvision:resnet50\n"
                    "  resnet-spec import hf:path/to/resnet-50 --out hf_resnet50.yaml\n"
                    "  resnet-spec import timm:resnet50d --out resnet50d.yaml\n"
                    "  resnet-spec import timm:seresnext50_32x4d --out se.yaml && "
                    "resnet-spec compare se.yaml --reference timm:seresnext50_32x4d",
                    description=(
                        "Write the spec of a torchvision or timm ResNet by reading its module structure (block "
                        "types, widths, strides, groups, stem, shortcuts, attention, norm). The spec is built on the "
                        "meta device and checked module by module against the reference before it is written. "
                        "hf:PATH reads a transformers ResNet's config.json (a model folder saved with "
                        "save_pretrained); its weights then load with --weights PATH."))
    p.add_argument("reference", metavar="LIB:NAME", help="torchvision:NAME, timm:NAME or hf:PATH")
    p.add_argument("--out", metavar="FILE", help="write the spec here (default: print it)")
    p.set_defaults(func=run)


def run(args: Namespace) -> int:
    if args.reference.startswith("hf:"):
        if args.out:
            from ..fileio import check_writable
            check_writable(args.out)
        from ..tools.import_hf import import_hf
        data, text = import_hf(args.reference[3:])
    else:
        data, text = _from_module(args)
    if not args.out:
        print(text, end="")
        return 0
    from ..fileio import atomic_write
    atomic_write(args.out, lambda f: f.write(text.encode("utf-8")))
    blocks = [s["blocks"] for s in data["stages"]]
    print(f"wrote {args.out}: {data['name']}, {data['block']['type']} blocks {blocks}")
    return 0


def _from_module(args: Namespace) -> tuple[dict[str, Any], str]:
    from ..tools.compare import parse_reference
    ref = parse_reference(args.reference)
    if args.out:
        from ..fileio import check_writable
        check_writable(args.out)
    from ..tools.compare import reference_model
    from ..tools.importer import import_model
    return import_model(ref, reference_model(ref))
