"""What the commands share: parser helpers, and the wording of library errors as command-line options."""
from __future__ import annotations

import argparse
import re
import textwrap
from typing import TYPE_CHECKING

from ..errors import InputError, LimitError, ResNetSpecError

if TYPE_CHECKING:
    from typing import TypeAlias

    # What parser.add_subparsers() returns; argparse names no public type for it.
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def add_command(sub: Subparsers, name: str, help: str, examples: str,
                description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand parser whose --help opens with `description` (default: help) and ends with examples."""
    return sub.add_parser(
        name, help=help, description=textwrap.fill(description or help, 88), epilog="examples:\n" + examples + "\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)


def positive_int(text: str) -> int:
    """argparse type for counts and sizes: a whole number of at least 1 (anything else is bad usage, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def flag(setting: str) -> str:
    """The option that sets a library argument: max_params -> --max-params."""
    return "--" + setting.replace("_", "-")


def describe(error: ResNetSpecError) -> str:
    """A library error worded for the command line: the options it concerns named as flags."""
    message = str(error)
    if isinstance(error, LimitError) and error.limit:
        return f"{message} ({flag(error.limit)} raises it)"
    if isinstance(error, InputError) and error.setting:
        # The library says "amp fp16 needs ...; use amp bf16": the setting opens a clause, followed by its value.
        return re.sub(rf"(^|use ){re.escape(error.setting)} ", rf"\g<1>{flag(error.setting)} ", message)
    return message
