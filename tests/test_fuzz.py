"""Property-based fuzzing: specs drawn from the JSON Schema itself, and mutated YAML text.

Specs: every draw either loads, builds and runs a forward pass whose output shape is the one the
meta-device analysis predicted, or is refused with SpecError; any other exception is a bug.
YAML text: a valid spec with lines deleted, duplicated or swapped, or characters changed; the CLI
never shows a traceback.

The strategies are built here from schemas/resnet-spec.schema.json, keyword by keyword.
hypothesis-jsonschema would read the schema only as draft 7, and its 0.23.1 fails on this
hypothesis (6.170: `'many' object has no attribute 'more'` for any object schema). A test holds
the schema to the keywords the builder below understands, and drawn specs are checked against the
real 2020-12 validator. Sizes are capped (SMALL) so that a build takes milliseconds.
RESNET_SPEC_FUZZ_EXAMPLES sets the number of examples per property (default 50).
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from helpers import SPECS
from resnet_spec.errors import SpecError
from resnet_spec.spec.schema import _validator, load_schema
from resnet_spec.spec.yamlio import dump_yaml, load_yaml

EXAMPLES = int(os.environ.get("RESNET_SPEC_FUZZ_EXAMPLES", "50"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# The keywords from_json_schema understands; annotations (description, default, ...) change nothing.
UNDERSTOOD = {"$schema", "$id", "$defs", "$ref", "title", "description", "default", "type", "enum", "const",
              "properties", "additionalProperties", "required", "items", "minItems", "maxItems", "uniqueItems",
              "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength"}

# Upper bounds that keep a drawn network small: (where in $defs, or "" for the top, property, keyword, bound).
SMALL = [("", "stages", "maxItems", 3), ("stage", "channels", "maximum", 16), ("stage", "blocks", "maximum", 2),
         ("stage", "dilation", "maximum", 3), ("stage", "overrides", "maxItems", 2), ("input", "size", "maximum", 48),
         ("stem", "width", "maximum", 16), ("block", "groups", "maximum", 4),
         ("block", "width_per_group", "maximum", 128),
         ("block", "expansion", "maximum", 4), ("norm", "groups", "maximum", 8), ("head", "num_classes", "maximum", 10),
         ("", "name", "maxLength", 12), ("", "description", "maxLength", 12)]


def _keywords(node: object, out: set[str], under_properties: bool = False) -> set[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if not under_properties:
                out.add(k)
            _keywords(v, out, under_properties=(k in ("properties", "$defs") and not under_properties))
    elif isinstance(node, list):
        for v in node:
            _keywords(v, out)
    return out


def small_schema() -> dict:
    """The spec schema with small sizes and no `extends` (it would read files): a subset of the real one."""
    schema = copy.deepcopy(load_schema())
    del schema["properties"]["extends"]
    for where, prop, keyword, bound in SMALL:
        node = schema if not where else schema["$defs"][where]
        node["properties"][prop][keyword] = bound
    schema["$defs"]["stage"]["properties"]["overrides"]["items"]["properties"]["index"]["maximum"] = 2
    return schema


def from_json_schema(node: dict, root: dict) -> st.SearchStrategy:
    """Instances of a schema node (within UNDERSTOOD), drawn directly."""
    if "$ref" in node:
        return from_json_schema(root["$defs"][node["$ref"].rsplit("/", 1)[1]], root)
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    types = node["type"] if isinstance(node["type"], list) else [node["type"]]
    return st.one_of([_of_type(t, node, root) for t in types])


def _of_type(kind: str, node: dict, root: dict) -> st.SearchStrategy:
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        lo = node.get("minimum", node.get("exclusiveMinimum", -(2**31) - 1) + 1)
        hi = node.get("maximum", node.get("exclusiveMaximum", 2**31 + 1) - 1)
        return st.integers(min(lo, hi), hi)
    if kind == "number":
        lo = node.get("minimum", node.get("exclusiveMinimum"))
        hi = min(node.get("maximum", float("inf")), node.get("exclusiveMaximum", float("inf")))
        return st.floats(lo, hi if hi != float("inf") else None, exclude_min="exclusiveMinimum" in node,
                         exclude_max="exclusiveMaximum" in node, allow_nan=False, allow_infinity=False)
    if kind == "string":
        # Printable text: control characters are refused by the loader, and ODD below brings some in.
        return st.text(st.characters(exclude_categories=["Cc", "Cs", "Cf"]), min_size=node.get("minLength", 0),
                       max_size=node.get("maxLength", 20))
    if kind == "array":
        unique = {"unique_by": lambda x: repr(x)} if node.get("uniqueItems") else {}
        return st.lists(from_json_schema(node["items"], root), min_size=node.get("minItems", 0),
                        max_size=node.get("maxItems", 4), **unique)
    assert kind == "object" and node.get("additionalProperties") is False, node
    props = {k: from_json_schema(v, root) for k, v in node.get("properties", {}).items()}
    required = set(node.get("required", ()))
    return st.fixed_dictionaries({k: v for k, v in props.items() if k in required},
                                 optional={k: v for k, v in props.items() if k not in required})


SPECS_DRAWN = from_json_schema(small_schema(), small_schema())


def test_schema_keeps_to_the_keywords_the_generator_understands():
    """If this fails, the strategies below no longer draw from the whole schema."""
    assert _keywords(load_schema(), set()) <= UNDERSTOOD


# Values that replace one part of a drawn spec: wrong types, out-of-range and edge numbers, none of
# them both valid and large enough to make a build slow.
ODD = st.sampled_from([3, 1, None, True, False, 0, -1, 2.0, 0.5, 10**9, 2**63, -(2**63), float("nan"), float("inf"),
                       "", "x", "no", "0x40", "1e3", "\x1b[2J", "relu", "bottleneck", [], [1], {}, {"type": "se"}])


def _paths(node: object, at: tuple = ()) -> list[tuple]:
    out = [at]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, at + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, at + (i,))
    return out


@st.composite
def spec_data(draw) -> dict:
    """A schema-valid spec, and a quarter of the time one part of it replaced by an odd value (or a key added)."""
    data = draw(SPECS_DRAWN)
    if draw(st.integers(0, 3)) == 3:  # not 0: hypothesis draws its simplest choice often
        paths = [p for p in _paths(data) if p]
        if paths and draw(st.booleans()):
            path = draw(st.sampled_from(paths))
            node = data
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = draw(ODD)
        else:
            data[draw(st.sampled_from(["input", "head", "stem", "stages", "stagez"]))] = draw(ODD)
    return data


def _check_spec(path: Path) -> str:
    """Load, build and run the spec at path; 'refused' or 'built'. Any exception but SpecError escapes."""
    from resnet_spec.api import load_spec
    from resnet_spec.model.analysis import analyse
    from resnet_spec.model.factory import build_model
    try:
        spec = load_spec(path)
    except SpecError as e:
        assert e.errors and all(str(r) for r in e.errors)
        return "refused: " + re.sub(r"'[^']*'|\d[\d.e-]*", "_", e.errors[0].message)[:40]
    rows = analyse(spec, spec.input_size, 1)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    with torch.no_grad():
        out = model(torch.randn(1, spec.in_channels, spec.input_size, spec.input_size))
    shapes = {r.name: r.shape for r in rows}
    if isinstance(out, list):
        assert len(out) == len(spec.features)
        last = max(spec.features)
        if last >= 1:
            assert tuple(out[-1].shape) == shapes[f"layer{last}"]
    else:
        assert tuple(out.shape) == rows[-1].shape
        if spec.head is not None and spec.features is None:
            # num_classes 0: no classifier, the pooled features (timm's num_classes=0)
            assert tuple(out.shape) == (1, spec.head.num_classes or model.num_features)
    return "built"


@FUZZ
@given(data=spec_data())
def test_drawn_specs_build_to_the_predicted_shape_or_are_refused(data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "drawn.yaml"
        path.write_text(dump_yaml(data), encoding="utf-8")
        event(_check_spec(path))  # --hypothesis-show-statistics shows how many were built


@FUZZ
@given(data=SPECS_DRAWN)
def test_drawn_specs_are_schema_valid_and_read_back_as_the_same_data(data):
    """Every draw passes the real 2020-12 validator, and dump_yaml then load_yaml gives it back unchanged
    (strings such as '1e3' stay strings)."""
    assert not list(_validator().iter_errors(data))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "drawn.yaml"
        path.write_text(dump_yaml(data), encoding="utf-8")
        try:
            loaded = load_yaml(path).data
        except SpecError as e:  # a string of only a few characters YAML itself forbids (U+FFFE, say)
            assert all("not allowed in YAML" in r.message for r in e.errors), e
            return
        assert loaded == data


def test_the_generator_reaches_built_models():
    """The property above is not vacuous: a spec of the kind drawn builds and runs."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "small.yaml"
        path.write_text("spec_version: 1\ninput: {size: 16}\nstages: [{channels: 4, blocks: 1}]\n"
                        "features: [0, 1]\n")
        assert _check_spec(path) == "built"


# Mutated YAML text, through the CLI.

SEEDS = [SPECS / "resnet18.yaml", SPECS / "resnet50.yaml", SPECS / "resnet10.yaml"]
JUNK = st.sampled_from(list(":-[]{}&*!|>'\"%@`#,?\t\n ~0x9") + ["\x00", "\x1b", "\u202e", "\xff", "é", "*a", "&a ",
                                                                     "!!python/name:os.system ", "<<: ", "---\n"])


@st.composite
def mutated_yaml(draw) -> bytes:
    """A shipped spec with a few lines deleted, duplicated or swapped, characters changed, or a byte broken."""
    lines = draw(st.sampled_from(SEEDS)).read_text().splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "replace_char", "insert_char"]))
        i = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if not lines:
            lines = [draw(JUNK)]
        elif op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            line = lines[i]
            k = draw(st.integers(0, len(line)))
            cut = k + (1 if op == "replace_char" else 0)
            lines[i] = line[:k] + draw(JUNK) + line[cut:]
    raw = "".join(lines).encode("utf-8")
    if raw and draw(st.integers(0, 9)) == 0:  # now and then a byte that is not UTF-8
        k = draw(st.integers(0, len(raw) - 1))
        raw = raw[:k] + bytes([draw(st.sampled_from([0x80, 0xc3, 0xfe, 0xff]))]) + raw[k + 1:]
    return raw


def _cli(argv: list[str]) -> tuple[int, str, str]:
    from resnet_spec.cli.main import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@FUZZ
@given(raw=mutated_yaml())
def test_mutated_yaml_never_shows_a_traceback(raw):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mutant.yaml"
        path.write_bytes(raw)
        code, out, err = _cli(["validate", str(path)])
        assert code in (0, 1)
        assert "Traceback" not in err + out
        event("valid" if code == 0 else "refused")
        if code == 1:
            # One record a line: file[:line:column]: message. The file may be a shipped base reached by `extends`.
            lines = out.splitlines()[:-1]  # the last line is the summary
            assert lines and all(re.match(r"[^\s:][^:]*(:\d+:\d+)?: \S", line) for line in lines), lines
            return
        assert out == f"{path}: ok\n1 file valid\n"
        # A spec that validates also sizes up on the meta device, or is refused in one line.
        code, out, err = _cli(["build", str(path), "--dry-run"])
        assert code in (0, 1) and "Traceback" not in err, err
        assert code == 0 or len(err.splitlines()) == 1, err
