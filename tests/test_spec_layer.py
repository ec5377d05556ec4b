"""Spec layer: the typed spec says what it means, keeps where things were written, and compares as a value."""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path

import pytest

from resnet_spec.errors import SpecError
from resnet_spec.spec import rules
from resnet_spec.spec.load import load_spec, validate
from resnet_spec.spec.resolve import Resolved, resolve
from resnet_spec.spec.schema import defaults, load_schema
from resnet_spec.spec.types import (
    AttentionSpec,
    BlockSpec,
    NormSpec,
    Origins,
    ResNetSpec,
    StemSpec,
    from_data,
    merge_block,
    resolve_block,
    with_num_classes,
)
from resnet_spec.spec.yamlio import load_yaml

# Overrides written out of index order, a stage block and a top-level block: each field set in one place.
MIXED = """spec_version: 1
block: {type: basic, shortcut: avg_conv}
stages:
  - channels: 16
    blocks: 3
    overrides: [{index: 2, block: {groups: 2}}, {index: 0, block: {groups: 4, stride_on: 1x1}}]
  - {channels: 32, blocks: 2, stride: 2, block: {width_per_group: 32}}
"""


def _write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _literal_values(tp: object) -> set[object]:
    """The values a Literal type (or a union holding Literals and None) allows, None left out."""
    if typing.get_origin(tp) is typing.Literal:
        return set(typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return set().union(*(_literal_values(a) for a in typing.get_args(tp)))
    return set()


@pytest.mark.parametrize("where, cls", [("block", BlockSpec), ("attention", AttentionSpec), ("stem", StemSpec),
                                        ("norm", NormSpec), ("", ResNetSpec)])
def test_every_enum_field_is_a_literal_of_the_schemas_names(where, cls):
    schema = load_schema()
    node = schema["$defs"][where] if where else schema
    hints = typing.get_type_hints(cls)
    enums = {k: p["enum"] for k, p in node["properties"].items() if "enum" in p}
    assert enums, where
    for name, enum in enums.items():
        assert _literal_values(hints[name]) == {v for v in enum if v is not None}, name


def test_attention_defaults_come_from_the_schema_alone():
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(AttentionSpec))
    block = resolve_block(merge_block(defaults("block"), {"attention": {"type": "se"}}))
    assert block.attention == AttentionSpec(**{**defaults("attention"), "type": "se"})


def test_a_spec_is_hashable_and_two_loads_are_equal():
    a, b = load_spec("resnet50"), load_spec("resnet50")
    assert a == b and hash(a) == hash(b)
    assert len({a, b, load_spec("resnet18")}) == 2


def test_data_and_origins_take_no_part_in_equality():
    spec = load_spec("resnet50")
    assert dataclasses.replace(spec, data={}) == spec
    assert dataclasses.replace(spec.stages[0], origins=Origins()) == spec.stages[0]
    assert dataclasses.replace(spec, activation="silu") != spec


def test_with_num_classes_leaves_the_original_data_alone():
    spec = load_spec("resnet50")
    before = copy.deepcopy(spec.data)
    resized = with_num_classes(spec, 10)
    assert spec.data == before and spec.head is not None and spec.head.num_classes == 1000
    assert resized.data["head"]["num_classes"] == 10 and resized.head == dataclasses.replace(spec.head, num_classes=10)
    assert resized != spec


def test_the_typed_spec_keeps_where_each_override_and_block_field_was_written(tmp_path):
    spec = from_data(resolve(_write(tmp_path, MIXED)).data, "mixed")
    first, second = spec.stages
    assert [i for i, _ in first.overrides] == [0, 2]  # by index, as block_at reads them
    assert first.origins.overrides == (2, 0)  # as written: overrides[0] names block 2
    assert first.origins.where(0, "groups") == ("stages", 0, "overrides", 1, "block", "groups")
    assert first.origins.where(2, "groups") == ("stages", 0, "overrides", 0, "block", "groups")
    assert first.origins.where(0, "shortcut") == ("block", "shortcut")
    assert first.origins.where(1, "groups") is None
    assert second.origins.where(1, "width_per_group") == ("stages", 1, "block", "width_per_group")


def test_rules_need_only_the_typed_spec(tmp_path):
    """Given no raw data at all, the rules still point at the override, stage block or top-level block."""
    res = resolve(_write(tmp_path, MIXED))
    spec = from_data(res.data, "mixed")
    bare = Resolved("mixed.yaml", {}, {}, {}, {}, ["mixed.yaml"])
    assert [(e.path, e.message) for e in rules.check(spec, bare)] == [
        ("$.stages[0].overrides[1].block.groups", "basic blocks support only groups: 1, got 4"),
        ("$.stages[0].overrides[1].block.stride_on", "stride_on: 1x1 applies to bottleneck blocks only"),
        ("$.stages[0].overrides[0].block.groups", "basic blocks support only groups: 1, got 2"),
        ("$.stages[1].block.width_per_group", "basic blocks support only width_per_group: 64, got 32"),
    ]


def test_rule_problems_come_in_reading_order(tmp_path):
    """Stage by stage, then block by block, then the whole network: the order `rules.check` has always used."""
    path = _write(tmp_path, "spec_version: 1\nextends: resnet18\nstem: {type: deep_tiered, width: 3}\n"
                            "stages:\n"
                            "  - {channels: 64, blocks: 2, overrides: [{index: 1, block: {groups: 2}},"
                            " {index: 1, block: {stride_on: 1x1}}, {index: 7, block: {groups: 3}}]}\n"
                            "  - {channels: 64, blocks: 2, stride: 2, dilation: 2}\n"
                            "output_stride: 8\nfeatures: [0, 7]\n")
    res = resolve(path)
    found = [e.path for e in rules.check(from_data(res.data, "x"), res)]
    assert found == ["$.stages[0].overrides[1].index", "$.stages[0].overrides[2].index",
                     "$.stages[0].overrides[0].block.groups", "$.stages[1].dilation", "$.stem.width",
                     "$.features[1]"]
    assert sorted(validate(path)) == validate(path)


def test_every_duplicate_key_is_reported_with_the_error_that_stops_the_read(tmp_path):
    path = _write(tmp_path, "a: 1\na: 2\nb: {c: 1, c: 2}\nd: [*x]\n")
    with pytest.raises(SpecError) as e:
        load_yaml(path, "d.yaml")
    assert [str(r) for r in e.value.errors] == [
        "d.yaml:2:1: $.a: duplicate key 'a' (first defined on line 1)",
        "d.yaml:3:11: $.b.c: duplicate key 'c' (first defined on line 3)",
        "d.yaml:4:5: $.d: aliases (*x) are not allowed; use `extends` to reuse a spec",
    ]


def test_positions_of_values_and_keys(tmp_path):
    doc = load_yaml(_write(tmp_path, "spec_version: 1\nstages:\n  - {channels: 8, blocks: 1}\n  - x\n"))
    assert doc.data == {"spec_version": 1, "stages": [{"channels": 8, "blocks": 1}, "x"]}
    assert doc.values[("stages", 0, "blocks")] == (3, 27) and doc.keys[("stages", 0, "blocks")] == (3, 19)
    assert doc.values[("stages", 1)] == (4, 5) and doc.text[("stages", 1)] == "x"
