"""Correctness of the fast paths: BN-folded inference models, weight-loading builds, a torch-free validate.

Timing lives in benchmarks/bench.py, never here.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from helpers import SPECS
from resnet_spec import build_model, load_spec
from resnet_spec.model.factory import materialize_buffers
from resnet_spec.model.optimize import conv_bn_pairs

# The fold reorders fp32 multiply-adds; measured max relative differences are about 1e-6.
FOLD_RTOL = 1e-4


def _randomize_batchnorms(model: nn.Module) -> None:
    """Non-trivial running statistics and affine terms, so a wrong fold cannot pass for a right one."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5, generator=g)
                m.running_var.uniform_(0.3, 3.0, generator=g)
                m.weight.uniform_(0.3, 2.0, generator=g)
                m.bias.normal_(0, 0.5, generator=g)


def _eager(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name).eval()
    _randomize_batchnorms(model)
    return model


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("name", ["resnet18", "resnext50_32x4d", "resnet18d", "resnetblur50", "seresnet50",
                                  "resnet50_gn", "resnet20"])
def test_folded_model_equals_eager(name: str) -> None:
    eager = _eager(name)
    sd = {k: v.clone() for k, v in eager.state_dict().items()}
    opt = build_model(name, init="none", weights=sd, optimize="inference")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = eager(x), opt(x)
    assert got.shape == want.shape
    assert _rel(got, want) <= FOLD_RTOL
    assert not opt.training and not any(p.requires_grad for p in opt.parameters())
    convs = [m for m in opt.modules() if isinstance(m, nn.Conv2d) and m.weight.ndim == 4]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    n_bn = sum(type(m) is nn.BatchNorm2d for m in eager.modules())
    left = sum(type(m) is nn.BatchNorm2d for m in opt.modules())
    assert left == n_bn - len(conv_bn_pairs(eager))
    if name in ("resnet18", "resnext50_32x4d", "resnet18d", "resnet20"):
        assert left == 0  # every BatchNorm of these follows a conv directly


def test_fold_skips_a_conv_whose_output_has_another_reader() -> None:
    class Branch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y

    assert conv_bn_pairs(Branch()) == []


def test_fold_leaves_the_eager_model_alone() -> None:
    eager = _eager("resnet18")
    before = {k: v.clone() for k, v in eager.state_dict().items()}
    build_model("resnet18", init="none", weights=eager.state_dict(), optimize="inference")
    after = eager.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", ["resnet50", "resnetblur50", "resnet20"])
def test_init_none_loads_strictly_and_matches(name: str) -> None:
    eager = _eager(name)
    sd = eager.state_dict()
    model = build_model(name, init="none")
    assert all(t.is_meta for t in model.state_dict().values())
    result = model.load_state_dict(sd, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    materialize_buffers(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), eager(x))
        assert torch.equal(build_model(name, init="none", weights=sd).eval()(x), eager(x))


def test_init_none_loads_torchvision_weights() -> None:
    torchvision = pytest.importorskip("torchvision")
    ref = torchvision.models.resnet18().eval()
    _randomize_batchnorms(ref)
    model = build_model("resnet18", init="none", weights=ref.state_dict()).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_init_none_refuses_incomplete_weights() -> None:
    sd = dict(_eager("resnet18").state_dict())
    del sd["layer2.0.bn1.running_var"]
    with pytest.raises(RuntimeError, match="layer2.0.bn1.running_var"):
        build_model("resnet18", init="none", weights=sd)


@pytest.mark.parametrize("kwargs, message", [
    (dict(init="zeros"), "init must be"),
    (dict(optimize="training"), "optimize must be"),
    (dict(compile=True), "compile=True needs"),
    (dict(init="random", weights={}), "weights= needs init='none'"),  # weights alone imply init='none'
    (dict(init="none", optimize="inference"), "optimize needs real weights"),
])
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(load_spec("resnet18"), **kwargs)


def test_build_num_classes_still_positional() -> None:
    assert build_model("resnet18", 10).fc.out_features == 10


def test_validate_imports_no_torch() -> None:
    specs = sorted(str(p) for p in SPECS.glob("*.yaml"))
    probe = ("import sys; from resnet_spec.cli.main import main; rc = main(['validate', *sys.argv[1:]]); "
             "print(rc, 'torch' in sys.modules, sorted(m for m in sys.modules if m.startswith('resnet_spec')))")
    out = subprocess.run([sys.executable, "-c", probe, *specs], capture_output=True, text=True, check=True).stdout
    rc, torch_loaded, ours = out.strip().splitlines()[-1].split(" ", 2)
    assert rc == "0"
    assert torch_loaded == "False", f"torch was imported; resnet_spec modules loaded: {ours}"


def test_build_optimize_runs(cli) -> None:
    code, out, err = cli(["build", "resnet18", "--optimize", "--input-size", "64"])
    assert code == 0, err
    assert "optimized" in out and "forward pass on cpu" in out


def test_build_optimize_refuses_out(cli, tmp_path) -> None:
    code, _, err = cli(["build", "resnet18", "--optimize", "--out", str(tmp_path / "m.pt")])
    assert code == 1
    assert "--optimize" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("init", ["random", "none"])
def test_build_model_parameter_cap(init: str) -> None:
    from torch.nn.modules import module as nn_module

    from resnet_spec.model.limits import LimitError, Limits
    hooks = len(nn_module._global_parameter_registration_hooks)
    with pytest.raises(LimitError, match="11,689,512 parameters, more than the cap of 1,000"):
        build_model("resnet18", init=init, limits=Limits(max_params=1000))
    assert len(nn_module._global_parameter_registration_hooks) == hooks  # the counting hook is gone
    assert sum(p.numel() for p in build_model("resnet18", init=init).parameters()) == 11_689_512
