"""The docs say what the schema says: every numeric range in the field reference equals the schema's bounds."""
from __future__ import annotations

import json
import re

import pytest

from helpers import ROOT

SCHEMA = json.loads((ROOT / "schemas" / "resnet-spec.schema.json").read_text())
# docs/variants.md's field-reference headings, and the schema object each one documents.
SECTIONS = {"`stem`": "stem", "`block`": "block", "`stages[i]`": "stage", "Top level": None}
ROW = re.compile(r"^\| `([\w.]+)` \| (-?\d+)…(\d+)\b")


def _field_schema(section: str | None, field: str) -> dict:
    parts = field.split(".")
    node = SCHEMA if section is None else SCHEMA["$defs"][section]
    for part in parts:
        node = node["properties"][part]
        ref = node.get("$ref") or next((o["$ref"] for o in node.get("anyOf", node.get("oneOf", [])) if "$ref" in o),
                                       None)
        if ref and part != parts[-1]:
            node = SCHEMA["$defs"][ref.rsplit("/", 1)[1]]
    return node


def _documented_ranges() -> list[tuple[str | None, str, int, int]]:
    rows, section = [], None
    for line in (ROOT / "docs" / "variants.md").read_text().splitlines():
        if line.startswith("#### "):
            section = next((s for h, s in SECTIONS.items() if line[5:].startswith(h)), "?")
        elif (m := ROW.match(line)) and section != "?":
            rows.append((section, m.group(1), int(m.group(2)), int(m.group(3))))
    return rows


RANGES = _documented_ranges()


def test_the_field_reference_documents_ranges():
    assert len(RANGES) >= 8, RANGES  # the parser still finds the tables


@pytest.mark.parametrize(("section", "field", "low", "high"), RANGES, ids=[f"{s}.{f}" for s, f, _, _ in RANGES])
def test_documented_range_equals_the_schema(section, field, low, high):
    node = _field_schema(section, field)
    bounds = [node] + node.get("anyOf", []) + node.get("oneOf", [])
    found = next(((b["minimum"], b["maximum"]) for b in bounds if "minimum" in b and "maximum" in b), None)
    if found is None and "items" in node:  # a list of numbers: the bounds are its items'
        found = node["items"]["minimum"], node["items"]["maximum"]
    assert found == (low, high), f"docs/variants.md gives {field} as {low}…{high}, the schema {found}"
