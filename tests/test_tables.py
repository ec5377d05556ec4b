"""Name tables: each kind's table lists exactly the schema's enum, and an unknown name is a loud ValueError."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from resnet_spec import build_model, load_spec
from resnet_spec.model.blocks import BLOCKS, make_block
from resnet_spec.model.layers import (
    ACTIVATIONS,
    ANTI_ALIASES,
    ATTENTIONS,
    NORMS,
    SHORTCUTS,
    LayerContext,
    make_attention,
    make_shortcut,
)
from resnet_spec.model.stems import STEM_POOLS, STEMS, make_stem_conv, make_stem_pool
from resnet_spec.spec import stem as spec_stem
from resnet_spec.spec.layout import plan

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "schemas" / "resnet-spec.schema.json")
                    .read_text(encoding="utf-8"))
DEFS = SCHEMA["$defs"]

# (kind, table, the schema's enum, enum values the table leaves out because they build no module)
TABLES = [
    ("activation", ACTIVATIONS, SCHEMA["properties"]["activation"]["enum"], set()),
    ("anti_alias", ANTI_ALIASES, SCHEMA["properties"]["anti_alias"]["enum"], {"none"}),
    ("stem", STEMS, DEFS["stem"]["properties"]["type"]["enum"], set()),
    ("stem pool", STEM_POOLS, DEFS["stem"]["properties"]["pool"]["enum"], {None}),  # null: resolved by the spec
    ("norm", NORMS, DEFS["norm"]["properties"]["type"]["enum"], set()),
    ("block", BLOCKS, DEFS["block"]["properties"]["type"]["enum"], set()),
    ("shortcut", SHORTCUTS, DEFS["block"]["properties"]["shortcut"]["enum"], set()),
    ("attention", ATTENTIONS, DEFS["attention"]["properties"]["type"]["enum"], {"none"}),
]


@pytest.mark.parametrize(("kind", "table", "enum", "without"), TABLES, ids=[t[0] for t in TABLES])
def test_table_lists_the_schema_enum(kind, table, enum, without):
    assert len(enum) == len(set(enum)), f"{kind}: the schema's enum repeats a name"
    assert set(table) == set(enum) - without, f"{kind}: the table and the schema's enum differ"
    assert not set(table) & without, f"{kind}: 'none' must build no module, so it has no entry"


def test_conv_table_lists_the_schema_enum():
    from resnet_spec.model.layers import CONVS
    assert set(CONVS) == set(DEFS["conv"]["properties"]["type"]["enum"])


def test_preact_tables_cover_their_kinds():
    """Every block type has a pre-activation block; every shortcut but option_a (refused there) a projection;
    the norms fused with an activation are norms."""
    from resnet_spec.model.layers import NORM_ACTS
    from resnet_spec.model.preact import PREACT_BLOCKS, PREACT_SHORTCUTS
    assert set(PREACT_BLOCKS) == set(BLOCKS)
    assert set(PREACT_SHORTCUTS) == set(SHORTCUTS) - {"option_a"}
    assert set(NORM_ACTS) <= set(NORMS)
    for name, cls in PREACT_BLOCKS.items():
        assert cls.convs == BLOCKS[name].convs, name  # the importer tells block types apart by these


def test_model_stems_are_the_spec_stems():
    assert set(STEMS) == set(spec_stem.STEMS)


def test_spec_layer_knows_every_block_type():
    from resnet_spec.spec.types import BLOCK_KINDS
    assert set(BLOCK_KINDS) == set(BLOCKS)


def test_importer_reads_every_block_type():
    from resnet_spec.tools.structure import BLOCK_READERS
    assert set(BLOCK_READERS) == set(BLOCKS)


def _spec():
    return load_spec("seresnet50")


def _ctx(**change):
    spec = _spec()
    fields = {"norm": spec.norm, "activation": spec.activation, "anti_alias": spec.anti_alias, **change}
    return LayerContext(**fields)


def _first_block():
    return plan(_spec())[0].blocks[0]  # it has a shortcut, so every field of it is looked up


# (table, a call that looks up `name` in it)
UNKNOWN = {
    "activation": (ACTIVATIONS, lambda name: _ctx(activation=name)),
    "anti_alias": (ANTI_ALIASES, lambda name: _ctx(anti_alias=name)),
    "norm": (NORMS, lambda name: _ctx(norm=replace(_spec().norm, type=name))),
    "attention": (ATTENTIONS, lambda name: make_attention(replace(_spec().stages[0].block.attention, type=name), 64)),
    "shortcut": (SHORTCUTS, lambda name: make_shortcut(
        replace(_first_block(), block=replace(_first_block().block, shortcut=name)), _ctx())),
    "block": (BLOCKS, lambda name: make_block(
        replace(_first_block(), block=replace(_first_block().block, type=name)), _ctx())),
    "stem": (STEMS, lambda name: make_stem_conv(3, replace(_spec().stem, type=name), _ctx())),
    "stem pool": (STEM_POOLS, lambda name: make_stem_pool(replace(_spec().stem, pool=name), _ctx())),
}


@pytest.mark.parametrize("kind", sorted(UNKNOWN))
def test_unknown_name_is_an_error_naming_the_known_ones(kind):
    table, call = UNKNOWN[kind]
    with pytest.raises(ValueError) as e:
        call("typo")
    message = str(e.value)
    assert "unknown" in message and "'typo'" in message
    for name in table:
        assert name in message, f"{kind}: the error does not name {name!r}: {message}"


@pytest.mark.parametrize(("field", "value"), [("activation", "relu6"), ("anti_alias", "blurr")])
def test_build_refuses_an_unknown_name_instead_of_falling_back(field, value):
    """A hand-made spec with a typo must not build another network (it once built Identity or AvgPool)."""
    spec = replace(load_spec("resnet18"), **{field: value})
    with pytest.raises(ValueError, match=f"unknown .*'{value}'"):
        build_model(spec)


def test_build_refuses_an_unknown_norm():
    spec = load_spec("resnet18")
    with pytest.raises(ValueError, match="unknown .*'layernorm'; known: batchnorm, evonorm_s0, frn, groupnorm"):
        build_model(replace(spec, norm=replace(spec.norm, type="layernorm")))


def test_every_table_entry_builds():
    """Each entry constructs a module of the right shape, so an entry cannot name a broken factory."""
    ctx = _ctx()
    x = torch.randn(2, 64, 8, 8)
    for name, make in ACTIVATIONS.items():
        assert make()(x.clone()).shape == x.shape, name
    for name, make_aa in ANTI_ALIASES.items():
        assert make_aa(64, 2)(x).shape == (2, 64, 4, 4), name
    for name, make_norm in NORMS.items():
        assert make_norm(replace(ctx.norm, groups=8), 64)(x).shape == x.shape, name
    for name, make_att in ATTENTIONS.items():
        assert make_att(64, _spec().stages[0].block.attention)(x).shape == x.shape, name
