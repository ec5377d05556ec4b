"""CLI tier, issue 15: no input ends in exit 3. Every command, every flag, hostile numbers and paths.

Hypothesis drives `main([...])` with each command's own options, read from its parser, so a new flag is
covered without editing this file. Each run must exit 0, 1 or 2, say why when it is not 0, and show no
traceback. RESNET_SPEC_PROPERTY_SCALE=10 runs ten times the examples.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import TINY, no_traceback
from resnet_spec.cli.main import COMMANDS, main, make_parser

SCALE = int(os.environ.get("RESNET_SPEC_PROPERTY_SCALE", "1"))
EXAMPLES = 12  # per command: 11 commands, about 25 s in all
# One call; a read that blocks (a FIFO opened for reading) would hang the suite instead. `bench resnet18` (every
# engine, inductor compiles included) is a legitimate call of about 45 s on a quiet 2-core machine.
PER_RUN_S = 180

NUMBERS = ["0", "-1", str(2**64), "nan", "inf", "-inf", "1e400", "9" * 40, "abc", "", "1", "2", "16"]
PATHS = ["tiny.yaml", "tiny.pt", "dir", "missing.yaml", "empty.yaml", "fifo", "resnet18", "dir/nested/out.pt"]
TEXT = ["abc", "", "torchvision:resnet18", "timm:nope", "x=1", "-1", "nan", "tiny.yaml"]
PATH_DESTS = {"out", "weights", "data", "resume", "diagram", "confusion", "cache_dir"}
SKIP = (argparse._HelpAction, argparse._VersionAction)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _values(action: argparse.Action) -> st.SearchStrategy[str]:
    """What to give an option or positional: its choices and one bad word, or hostile numbers, paths or text."""
    if action.choices is not None:
        return st.sampled_from([*map(str, action.choices), "bogus"])
    if action.dest in PATH_DESTS or action.dest in ("spec", "checkpoint", "images", "files", "a", "b"):
        return st.sampled_from(PATHS)
    if action.type is not None and action.type is not str:
        return st.sampled_from(NUMBERS)
    return st.sampled_from(TEXT + PATHS)


@st.composite
def _argv(draw: st.DrawFn, command: str) -> list[str]:
    parser = _subparsers()[command]
    argv = [command]
    for action in parser._actions:
        if isinstance(action, SKIP):
            continue
        if not action.option_strings:  # a positional: always given, sometimes twice when it takes many
            argv += [draw(_values(action)) for _ in range(2 if action.nargs in ("+", "*") and draw(st.booleans())
                                                           else 1)]
        elif draw(st.integers(0, 3)) == 0 or (action.required and draw(st.integers(0, 5)) > 0):
            if action.nargs == 0:
                argv.append(action.option_strings[-1])
            else:
                argv += [action.option_strings[-1], draw(_values(action))]
    return argv


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder of hostile paths: a spec, a checkpoint, a folder, an empty file, a FIFO (and what is missing)."""
    root = tmp_path_factory.mktemp("property")
    (root / "tiny.yaml").write_text(TINY)
    (root / "dir").mkdir()
    (root / "empty.yaml").write_text("")
    os.mkfifo(root / "fifo")
    with contextlib.chdir(root), contextlib.redirect_stdout(io.StringIO()):
        assert main(["build", "tiny.yaml", "--out", "tiny.pt"]) == 0
    return root


class _Hung(BaseException):
    """Not an Exception, so the CLI's catch-all for bugs cannot turn a hang into exit 3: the test reports it."""


def _timeout(signum: int, frame: object) -> None:
    raise _Hung(f"a command ran for more than {PER_RUN_S} s")


@pytest.mark.parametrize("command", COMMANDS)
def test_no_input_ends_in_a_bug(workspace, command):
    @settings(max_examples=EXAMPLES * SCALE, deadline=None, derandomize=SCALE == 1,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(argv=_argv(command))
    def check(argv: list[str]) -> None:
        out, err = io.StringIO(), io.StringIO()
        old = signal.signal(signal.SIGALRM, _timeout)
        signal.alarm(PER_RUN_S)
        try:
            with contextlib.chdir(workspace), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        o, e = out.getvalue(), err.getvalue()
        assert code in (0, 1, 2), f"exit {code} for {argv}:\n{e}"
        if code:
            # On stderr, or on stdout where it is the answer: validate's findings, diff's and compare's "differs".
            assert (e + o).strip(), f"exit {code} without a message for {argv}"
        no_traceback(o, e)

    check()
