"""Parity tier: every timm-named spec is timm's network (timm 1.0.31 as the reference, never a dependency).

For each spec: the same state_dict keys in the same order with the same shapes, the same seeded init,
a strict load of timm's state_dict, and bit-equal eval-mode outputs with every weight and BN statistic random.
"""
from __future__ import annotations

import pytest
import torch

from helpers import random_state, require_timm
from resnet_spec import build_model

timm = require_timm()

# Shipped specs named after the timm.create_model() entry point they reproduce.
TIMM_SPECS = [
    "resnet18d", "resnet26d", "resnet50c", "resnet50d", "resnet50s", "resnet50t", "seresnet50",
    "ecaresnet50d", "resnext50d_32x4d", "seresnext50_32x4d", "resnet50_gn", "resnetblur50", "resnetaa50d",
]


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
