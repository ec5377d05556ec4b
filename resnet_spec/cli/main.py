"""The `resnet-spec` command line. Each command lives in resnet_spec/cli/<name>.py."""
from __future__ import annotations

import argparse
import importlib
import keyword
import os
import sys

from ..errors import ResNetSpecError, SpecError
from .common import describe

# Command modules, in the order `--help` lists them. Each defines register(subparsers), which adds
# its parser and sets `func` to a run(args) -> int. They import torch only inside run().
COMMANDS = ("validate", "build", "list", "schema", "compare", "diff", "export", "import",
            "train", "predict", "evaluate")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnet-spec", description="Compile ResNet-family networks written as YAML specs.",
        epilog="Run `resnet-spec COMMAND --help` for a command's options and examples.")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"resnet-spec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = name.replace("-", "_") + ("_" if keyword.iskeyword(name) else "")  # import -> import_.py
        importlib.import_module(f"resnet_spec.cli.{module}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version (0) and usage errors (2)
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except SpecError as e:
        for rec in e.errors:
            print(rec, file=sys.stderr)
        return 1
    except ResNetSpecError as e:  # InputError, LimitError, OutputError
        print(f"resnet-spec {args.command}: error: {describe(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug rather than bad input: still one line, the traceback on request
        if os.environ.get("RESNET_SPEC_DEBUG"):
            raise
        print(f"resnet-spec {args.command}: internal error: {type(e).__name__}: {e}\n"
              "This is a bug in resnet-spec; RESNET_SPEC_DEBUG=1 shows the traceback.", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
