"""The `resnet-spec` command line. Each command lives in resnet_spec/cli/<name>.py."""
from __future__ import annotations

import argparse
import importlib
import keyword
import os
import sys

from ..errors import ResNetSpecError, SpecError
from .common import SEED_MAX, UsageError, describe

# Command modules, in the order `--help` lists them. Each defines register(subparsers), which adds
# its parser and sets `func` to a run(args) -> int. They import torch only inside run().
COMMANDS = ("validate", "build", "list", "schema", "compare", "diff", "export", "import",
            "train", "predict", "evaluate", "bench")


# Commands whose answer is a comparison: as diff(1) and cmp(1), 1 means "differs" and 2 "trouble".
COMPARING = ("diff", "compare")

EXIT_CODES = """exit status, for every command:
  0  ok (for validate: every file is valid; warnings do not fail it)
  1  invalid input: a spec, file, checkpoint or value refused, with a message saying why;
     for diff and compare: the two differ (as diff(1))
  2  bad usage: an unknown flag, a value out of its range, a device that is not there;
     for diff and compare: trouble, such as a spec that cannot be read or is invalid
  3  a bug in resnet-spec (RESNET_SPEC_DEBUG=1 shows the traceback); please report it"""


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnet-spec", description="Compile ResNet-family networks written as YAML specs.",
        epilog="Run `resnet-spec COMMAND --help` for a command's options and examples.\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
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
        args, extra = parser.parse_known_args(argv)
    except SystemExit as e:  # --help, --version (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    if extra:  # worded by the command's own parser, so the message names the command
        return _usage_error(parser, getattr(args, "command", None), f"unrecognized arguments: {' '.join(extra)}")
    if not _seed_in_range(getattr(args, "seed", None)):  # for a command whose --seed is a plain int
        return _usage_error(parser, args.command, f"argument --seed: must be from 0 to {SEED_MAX:,}, got {args.seed:,}")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except SpecError as e:
        for rec in e.errors:
            print(rec, file=sys.stderr)
        return 2 if args.command in COMPARING else 1
    except UsageError as e:  # a value argparse could not check alone, such as a device that is not there
        return _usage_error(parser, args.command, str(e))
    except ResNetSpecError as e:  # InputError, LimitError, OutputError
        print(f"resnet-spec {args.command}: error: {describe(e)}", file=sys.stderr)
        return 2 if args.command in COMPARING else 1
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


def _usage_error(parser: argparse.ArgumentParser, command: str | None, message: str) -> int:
    """Print the command's usage and `resnet-spec COMMAND: error: message`, as argparse does; return 2."""
    sub = _command_parser(parser, command)
    sub.print_usage(sys.stderr)
    print(f"{sub.prog}: error: {message}", file=sys.stderr)
    return 2


def _seed_in_range(seed: object) -> bool:
    return not isinstance(seed, int) or 0 <= seed <= SEED_MAX


def _command_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The subcommand's parser (whose errors read `resnet-spec build: error: ...`), else the top one."""
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            sub: argparse.ArgumentParser = action.choices[command]
            return sub
    return parser


if __name__ == "__main__":
    sys.exit(main())
