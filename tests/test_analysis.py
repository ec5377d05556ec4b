"""Analysis on the meta device: parameters and MACs against torchvision's published figures, memory bounded."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from resnet_spec.api import load_spec
from resnet_spec.model.analysis import analyse, totals

TORCHVISION = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
               "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]


@pytest.mark.parametrize("name", TORCHVISION)
def test_params_and_macs_equal_torchvision_published(name):
    import torchvision
    meta = torchvision.models.get_model_weights(name).IMAGENET1K_V1.meta
    total = totals(analyse(load_spec(name), 224))
    assert total.params == meta["num_params"]
    assert round(total.macs / 1e9, 3) == round(meta["_ops"], 3)


def test_verbose_rows_add_up_to_stage_rows():
    spec = load_spec("resnet50")
    stages = {r.name: r for r in analyse(spec, 64)}
    blocks = analyse(spec, 64, verbose=True)
    assert [r.name for r in blocks[1:4]] == ["layer1.0", "layer1.1", "layer1.2"]
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        rows = [r for r in blocks if r.name.startswith(stage + ".")]
        assert sum(r.params for r in rows) == stages[stage].params
        assert sum(r.macs for r in rows) == stages[stage].macs
        assert rows[-1].shape == stages[stage].shape
    assert totals(blocks) == totals(list(stages.values()))


def test_rows_follow_batch_and_input_size():
    spec = load_spec("resnet18")
    one, four = totals(analyse(spec, 64, batch=1)), totals(analyse(spec, 64, batch=4))
    assert four.macs == 4 * one.macs and four.params == one.params
    assert analyse(spec, 64)[-2].shape == (1, 512, 2, 2)


HUGE = """\
# About 2 billion parameters: wide_resnet101_2 with every width multiplied by 4.
spec_version: 1
extends: wide_resnet101_2
stem: {width: 256}
stages: [{channels: 256}, {channels: 512}, {channels: 1024}, {channels: 2048}]
"""

PROBE = textwrap.dedent("""
    import json, resource, sys
    from resnet_spec.api import load_spec
    from resnet_spec.model.analysis import analyse, totals
    spec = load_spec(sys.argv[1])
    analyse(load_spec("resnet10"), 32)  # warm up torch's lazy imports before measuring
    def peak_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:  # reset the peak to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = peak_kib()
    t = totals(analyse(spec))
    print(json.dumps({"params": t.params, "grew_kib": peak_kib() - before}))
""")


def test_dry_run_of_a_two_billion_parameter_spec_allocates_nothing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(HUGE)
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["params"] > 2_000_000_000
    # Real fp32 weights would take 8 GB; the meta device keeps the peak RSS within a small margin.
    assert result["grew_kib"] < 64 * 1024, result


def test_build_dry_run_prints_the_table(cli):
    code, out, err = cli(["build", "resnet18", "--dry-run"])
    assert code == 0, err
    assert "11,689,512 parameters, 1.814 GMACs per image" in out
    for row in ("stem", "layer1", "layer2", "layer3", "layer4", "head", "total"):
        assert any(line.startswith(row) for line in out.splitlines()), row
    assert "forward pass" not in out


def test_build_dry_run_verbose_has_one_row_per_block(cli):
    code, out, _ = cli(["build", "resnet34", "--dry-run", "--verbose", "--input-size", "64"])
    assert code == 0
    names = [line.split()[0] for line in out.splitlines() if line.startswith("layer")]
    assert len(names) == 3 + 4 + 6 + 3 and names[0] == "layer1.0" and names[-1] == "layer4.2"


def test_build_dry_run_costs_a_two_billion_parameter_spec_without_raising_caps(cli, tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(HUGE)
    code, out, err = cli(["build", path, "--dry-run"])
    assert code == 0, err
    params = int(out.splitlines()[-1].split(" parameters")[0].replace(",", ""))
    assert params > 2_000_000_000 and "forward pass" not in out
    # A real build of it is refused before anything is allocated.
    code, _, err = cli(["build", path])
    assert code == 1 and "more than the cap of 1,000,000,000 (--max-params raises it)" in err
