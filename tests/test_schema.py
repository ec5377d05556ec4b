"""Schema and validation tier: the schema itself, the shipped specs, and the invalid-spec corpus."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from jsonschema import Draft202012Validator

from helpers import DATA, ROOT, SPECS
from resnet_spec import SpecError, load_spec, validate
from resnet_spec.spec.schema import load_schema

INVALID = sorted((DATA / "invalid").glob("*.yaml"))


def test_schema_is_valid_draft_2020_12():
    schema = json.loads((ROOT / "schemas" / "resnet-spec.schema.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def _objects(node, path="$"):
    if isinstance(node, dict):
        if node.get("type") == "object" or (isinstance(node.get("type"), list) and "object" in node["type"]):
            yield path, node
        for k, v in node.items():
            yield from _objects(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _objects(v, f"{path}[{i}]")


def test_every_object_forbids_unknown_keys_and_every_field_is_described():
    schema = load_schema()
    for path, obj in _objects(schema):
        assert obj.get("additionalProperties") is False, path
        for name, prop in obj.get("properties", {}).items():
            target = prop
            if "$ref" in prop:
                target = {**schema["$defs"][prop["$ref"].rsplit("/", 1)[1]], **prop}
            assert target.get("description"), f"{path}.{name} has no description"


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_spec_is_valid_and_says_what_it_is(path):
    assert validate(path) == []
    assert path.read_text().startswith("# "), "each spec opens with a comment saying what the network is"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_spec_gives_exact_errors(path, monkeypatch):
    monkeypatch.chdir(path.parent)
    expected = path.with_suffix(".expected").read_text().strip()
    errors = validate(path.name)
    assert errors, "an invalid spec must produce errors"
    assert "\n".join(str(e) for e in errors) == expected
    with pytest.raises(SpecError) as info:
        load_spec(path.name)
    assert info.value.errors == errors


def test_errors_are_sorted_and_all_reported_at_once(monkeypatch):
    monkeypatch.chdir(DATA / "invalid")
    errors = validate("many_errors.yaml")
    assert len(errors) == 7
    assert errors == sorted(errors)
    assert [e.line for e in errors] == [1, 2, 2, 3, 5, 6, 7]


def test_extends_merges_stages_by_index_and_keeps_the_childs_name(tmp_path):
    (tmp_path / "resnet26.yaml").write_text(
        "# ResNet-26: bottleneck blocks [2, 2, 2, 2].\n"
        "spec_version: 1\n"
        "extends: resnet50\n"
        "stages: [{blocks: 2}, {blocks: 2}, {blocks: 2}, {blocks: 2}]\n")
    spec = load_spec(tmp_path / "resnet26.yaml")
    assert spec.name == "resnet26"
    assert [s.blocks for s in spec.stages] == [2, 2, 2, 2]
    assert [s.channels for s in spec.stages] == [64, 128, 256, 512]
    assert {s.block.type for s in spec.stages} == {"bottleneck"}


def test_errors_in_a_base_spec_point_into_the_base_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.yaml").write_text("spec_version: 1\nstages:\n  - {channels: 64, blocks: 1, strid: 2}\n")
    (tmp_path / "child.yaml").write_text("spec_version: 1\nextends: base.yaml\nhead: {num_classes: 10}\n")
    [err] = validate("child.yaml")
    assert str(err) == "base.yaml:3:31: $.stages[0].strid: unknown key 'strid'; did you mean 'stride'?"


def test_schema_defaults_reach_the_typed_spec():
    spec = load_spec(SPECS / "resnet18.yaml")
    assert spec.in_channels == 3 and spec.input_size == 224
    assert spec.norm.eps == 1e-5 and spec.norm.momentum == 0.1
    assert spec.stages[0].block.expansion == 1
    assert load_spec("resnet50").stages[0].block.expansion == 4
    assert spec.zero_init_residual is False and spec.output_stride is None


# Editors (issue 15): a spec may name the schema, which has an $id, and a third-party checker reads it.

def test_schema_has_an_id_and_a_spec_may_name_it(tmp_path):
    schema = load_schema()
    assert schema["$id"].startswith("https://") and schema["$id"].endswith("resnet-spec.schema.json")
    spec = tmp_path / "named.yaml"
    spec.write_text("# yaml-language-server: $schema=../schemas/resnet-spec.schema.json\n"
                    "$schema: ../schemas/resnet-spec.schema.json\nspec_version: 1\nextends: resnet18\n")
    assert validate(spec) == []
    assert load_spec(spec).num_blocks == 8


SELF_CONTAINED = [p for p in sorted(SPECS.glob("*.yaml")) if "\nextends:" not in p.read_text()]


@pytest.mark.skipif(shutil.which("check-jsonschema") is None, reason="check-jsonschema is not installed")
def test_check_jsonschema_accepts_shipped_specs_and_refuses_a_bad_one(tmp_path):
    """What an editor or CI does with the schema alone: no resnet-spec code involved."""
    schema = ROOT / "schemas" / "resnet-spec.schema.json"
    ok = subprocess.run(["check-jsonschema", "--schemafile", str(schema), *map(str, SELF_CONTAINED)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec_version: 1\nstages: [{channels: 8, blocks: 1, stride: 3}]\n")
    refused = subprocess.run(["check-jsonschema", "--schemafile", str(schema), str(bad)],
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "$.stages[0].stride" in refused.stdout


@pytest.mark.parametrize("word, options, hint", [
    ("SE", ["se", "eca"], "se"), ("ReLU", ["relu", "silu"], "relu"), ("bn", ["batchnorm", "groupnorm"], "batchnorm"),
    ("Stem", ["stem", "stages"], "stem"), ("bottlenek", ["basic", "bottleneck"], "bottleneck")])
def test_did_you_mean_covers_case_slips_and_abbreviations(word, options, hint):
    from resnet_spec.spec.schema import _suggest
    assert _suggest(word, options) == f"; did you mean '{hint}'?"


def test_case_slips_in_keys_and_values_get_a_suggestion(tmp_path):
    spec = tmp_path / "slips.yaml"
    spec.write_text("spec_version: 1\nextends: resnet18\nActivation: ReLU\nnorm: {type: bn}\n")
    messages = [e.message for e in validate(spec)]
    assert "unknown key 'Activation'; did you mean 'activation'?" in messages
    assert any(m.endswith("did you mean 'batchnorm'?") for m in messages), messages


def test_min_params_is_a_lower_bound_of_the_built_count():
    """The torch-free count that validate warns with never exceeds what build counts."""
    from resnet_spec import build_model
    from resnet_spec.spec.rules import min_params
    for name in ("resnet18", "resnet50", "resnext50_32x4d", "resnet26d"):
        spec = load_spec(name)
        built = sum(p.numel() for p in build_model(spec).parameters())
        assert 0.95 * built < min_params(spec) <= built, name
