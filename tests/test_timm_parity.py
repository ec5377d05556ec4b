"""Parity tier: every timm-named spec is timm's network (timm 1.0.31 as the reference, never a dependency).

For each spec: the same state_dict keys in the same order with the same shapes, the same seeded init,
a strict load of timm's state_dict, and bit-equal eval-mode outputs with every weight and BN statistic random.
"""
from __future__ import annotations

import math

import pytest
import torch

from resnet_spec import build_model

timm = pytest.importorskip("timm")

# Shipped specs named after the timm.create_model() entry point they reproduce.
TIMM_SPECS = [
    "resnet18d", "resnet26d", "resnet50c", "resnet50d", "resnet50s", "resnet50t", "seresnet50",
    "ecaresnet50d", "resnext50d_32x4d", "seresnext50_32x4d", "resnet50_gn", "resnetblur50", "resnetaa50d",
]


def random_state(reference: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Every float tensor of reference's state_dict redrawn: conv/linear weights at He scale (so a
    50-layer net stays finite), norm weights and running variances in [0.5, 1.5), biases and running
    means in [-0.1, 0.1). Zero-initialised last norms and unit BN statistics would hide mistakes."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, v in reference.state_dict().items():
        if not v.is_floating_point():
            out[key] = v  # num_batches_tracked
        elif v.ndim >= 2:
            out[key] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / (v[0].numel()))
        elif key.endswith(("weight", "running_var")):
            out[key] = torch.rand(v.shape, generator=g) + 0.5
        else:
            out[key] = (torch.rand(v.shape, generator=g) - 0.5) * 0.2
    return out


@pytest.mark.parametrize("name", TIMM_SPECS)
def test_spec_is_timms_network(name):
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False)
    torch.manual_seed(0)
    ours = build_model(name)

    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours_sd.items()] == [(k, tuple(v.shape)) for k, v in ref_sd.items()]
    # Same construction order and init as timm (zero_init_last included): a seeded build is the same tensors.
    assert [k for k in ref_sd if not torch.equal(ours_sd[k], ref_sd[k])] == []

    state = random_state(ref, seed=1)
    ref.load_state_dict(state, strict=True)
    ours.load_state_dict(state, strict=True)
    ours.eval()
    ref.eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got, want = ours(x), ref(x)
    assert torch.isfinite(want).all() and want.std() > 0
    # Exactly equal: the same ops in the same order on the same CPU, so no tolerance is needed.
    assert torch.equal(got, want)
