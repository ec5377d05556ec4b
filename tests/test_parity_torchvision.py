"""Parity tier: every shipped spec with a torchvision counterpart is torchvision's network.

(a) same state_dict keys, order and shapes, and a strict load; (b) seed-for-seed identical init;
(c) identical outputs in eval and train mode with random weights and BN statistics;
(d) the parameter count torchvision publishes. Outputs are compared with torch.equal: the
same ops run in the same order, so no tolerance is needed.
"""
from __future__ import annotations

import pytest
import torch
import torchvision

from resnet_spec import build_model

TORCHVISION = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
               "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]


def _randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.05 + (1.0 if name.endswith("bn3.weight") else 0))


@pytest.mark.parametrize("name", TORCHVISION)
def test_same_network_as_torchvision(name):
    torch.manual_seed(1234)
    ours = build_model(name)
    torch.manual_seed(1234)
    ref = getattr(torchvision.models, name)()

    # (a) keys, order, shapes, strict load
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    assert [t.shape for t in a.values()] == [t.shape for t in b.values()]
    # (b) seed-for-seed identical init, parameters and buffers
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # (d) published parameter count
    published = torchvision.models.get_model_weights(name).IMAGENET1K_V1.meta["num_params"]
    assert sum(p.numel() for p in ours.parameters()) == published

    # (c) equal outputs with random weights and BN statistics, eval then train mode
    _randomise(ref, seed=7)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours.eval(), ref.eval()
        assert torch.equal(ours(x), ref(x))
        ours.train(), ref.train()
        assert torch.equal(ours(x), ref(x))
    for k, v in ref.state_dict().items():  # running statistics updated identically
        assert torch.equal(ours.state_dict()[k], v), k


def test_builds_on_cuda_when_available():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(0)
    ref = torchvision.models.resnet50().cuda().eval()
    ours = build_model("resnet50").cuda().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.no_grad():
        # cuDNN may choose a different (non-bitwise-reproducible) algorithm per call: allow float32 noise.
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
