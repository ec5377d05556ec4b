"""What the commands share: parser helpers, and the wording of library errors as command-line options."""
from __future__ import annotations

import argparse
import re
import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import InputError, LimitError, ResNetSpecError

if TYPE_CHECKING:
    from typing import TypeAlias

    from ..spec.types import ResNetSpec

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


class UsageError(Exception):
    """Bad usage found after parsing (a device that is not there): worded by the command's parser, exit 2."""


def _number(text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_range(low: int, high: int) -> Callable[[str], int]:
    """argparse type for a whole number from low to high (anything else is bad usage, exit 2)."""
    def parse(text: str) -> int:
        value = int(_number(text, int))
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low:,} to {high:,}, got {value:,}")
        return value
    return parse


def float_range(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """argparse type for a finite number from low to high, each bound excluded where it is open."""
    def parse(text: str) -> float:
        value = _number(text, float)
        if value < low or value > high or (low_open and value == low) or (high_open and value == high):
            lower = f"more than {low:g}" if low_open else f"at least {low:g}"
            upper = f"less than {high:g}" if high_open else f"at most {high:g}"
            raise argparse.ArgumentTypeError(f"must be {lower} and {upper}, got {text}")
        return value
    return parse


def num_classes(text: str) -> int:
    """argparse type for --num-classes: 1 up to the schema's maximum for head.num_classes."""
    from ..spec.schema import load_schema
    high = int(load_schema()["$defs"]["head"]["properties"]["num_classes"]["maximum"])
    return int_range(1, high)(text)


SEED_MAX = 2**63 - 1  # torch takes seeds up to 2**64 - 1; the data sampler adds the epoch to it
seed = int_range(0, SEED_MAX)
_DEVICE = re.compile(r"(cpu|cuda(:\d{1,3})?)\Z")


def device_name(text: str) -> str:
    """argparse type for --device: cpu, cuda or cuda:N (whether it is there is checked by check_device)."""
    if text == "auto" or _DEVICE.match(text):
        return text
    raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda or cuda:N")


def check_device(name: str) -> None:
    """UsageError unless the device named is there; imports torch, so commands call it first thing in run()."""
    if not name.startswith("cuda"):
        return
    import torch
    if not torch.cuda.is_available():
        raise UsageError(f"argument --device: {name} asked for, but no CUDA device is available")
    index = int(name.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise UsageError(f"argument --device: {name} asked for, but there are only "
                         f"{torch.cuda.device_count()} CUDA devices")


def check_input_size(spec: ResNetSpec, size: int | None, option: str) -> None:
    """InputError if the spec's rules on feature-map sizes fail at a size given on the command line."""
    if size is None or size == spec.input_size:
        return
    from ..spec.rules import size_problems
    problems = size_problems(spec, size)
    if problems:
        raise InputError(f"{option} {size}: {problems[0]}")


def check_readable(path: str) -> None:
    """InputError unless path is a non-empty regular file this process can open: checked before any work starts."""
    from ..model.checkpoint import _regular_file  # the checkpoint reader's own checks, so the messages agree
    _regular_file(path)
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None


def check_classifier(spec: ResNetSpec, num_classes: int | None) -> None:
    """InputError for --num-classes on a spec that returns feature maps, which has no classifier to resize."""
    if num_classes is not None and spec.features is not None:
        raise InputError(f"--num-classes {num_classes}: spec '{spec.name}' returns feature maps "
                         f"(features: {list(spec.features)}) and has no classifier to resize")


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
