"""Drop-in tier: every shipped spec passes torchvision's and timm's own model-test protocol, and has timm's
model interface (issue 13).

Each check builds the spec's model, runs it eagerly on a small input (batch 2, 32 x 32 pixels, float32)
and requires the transformed model to give the same outputs:
- torch.jit.script, torch.fx.symbolic_trace, torch.export (dynamic batch) and create_feature_extractor
  run the same aten kernels as eager, so their outputs are bit-equal (torch.equal);
- torch.compile(fullgraph=True) runs inductor's own generated kernels (fused norm and activation, another
  summation order), so it is held to float32 rounding: max|diff| <= 1e-4 * max|eager|.
The checks take 2-30 s each a spec on two CPU cores, so the default run checks one spec per block, stem,
attention, norm, anti-alias and shortcut kind and the features forms (DEFAULT); `-m slow` every shipped spec.
"""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

from helpers import SPECS, require_timm
from resnet_spec import build_model
from resnet_spec.model.blocks import ResidualBlock
from resnet_spec.model.preact import PreActBlock

SHIPPED = sorted(p.stem for p in SPECS.glob("*.yaml"))
# Specs written here: the features forms (features lists, with and without output_stride), the heads without
# a classifier (head: null returns the unpooled map, num_classes: 0 the pooled features), and two 26-layer
# nets that hold every other kind between them: deep_tiered stem, SE, blur, GroupNorm; grouped 3x3, stride
# on the 1x1, ECA, avg anti-aliasing.
FORMS = {
    "features_resnet50d_0_2": "extends: resnet50d\nfeatures: [0, 2]\n",
    "features_resnet18_all_os8": "extends: resnet18\nfeatures: [0, 1, 2, 3, 4]\noutput_stride: 8\n",
    "features_resnet20_1_3": "extends: resnet20\nfeatures: [1, 3]\n",
    "resnet18_num_classes_0": "extends: resnet18\nhead: {num_classes: 0}\n",
    "resnet18_head_null": "extends: resnet18\nhead: null\n",
    "kinds_tiered_se_blur_gn": "extends: resnet26d\nstem: {type: deep_tiered}\nblock: {attention: {type: se}}\n"
                               "anti_alias: blur\nnorm: {type: groupnorm, groups: 8}\n",
    "kinds_grouped_1x1_eca_avg": "extends: resnet26d\nblock: {groups: 32, width_per_group: 4, stride_on: 1x1, "
                                 "attention: {type: eca}}\nanti_alias: avg\n",
    # Pre-activation nets (timm's ResNetV2 names), small: tiered stem + EvoNorm-S0 + avg_conv projections;
    # BiT's weight-standardised convs, GroupNorm and fixed-pad pool in basic blocks, as features; FRN with
    # the stride on the 1x1 and no classifier (pooled features).
    "preact_tiered_evos": "extends: resnetv2_50d\nstem: {type: deep_tiered}\nnorm: {type: evonorm_s0, groups: 8}\n"
                          "stages: [{channels: 16, blocks: 2}, {channels: 32, blocks: 2, stride: 2}]\n",
    "preact_bit_basic_features": "extends: resnetv2_50x1_bit\nblock: {type: basic}\nfeatures: [0, 2]\n"
                                 "stages: [{channels: 32, blocks: 2}, {channels: 64, blocks: 2, stride: 2}]\n",
    "preact_frn_1x1_pooled": "extends: resnetv2_50d_frn\nblock: {stride_on: 1x1}\nhead: {num_classes: 0}\n"
                             "stages: [{channels: 16, blocks: 1}, {channels: 32, blocks: 2, stride: 2}]\n",
}
CASES = SHIPPED + sorted(FORMS)
# Every check runs by default on these (with the forms, one spec per block, stem, attention, norm, anti-alias
# and shortcut kind: basic/conv7x7/max pool/conv shortcut, cifar/option_a, bottleneck/deep/avg_conv) and on
# every other shipped spec under -m slow: each check costs 2-30 s a 50-layer spec on two CPU cores.
DEFAULT = {"resnet18", "resnet20", "resnet26d", *FORMS}
COMPILE_RTOL = 1e-4


@pytest.fixture(scope="module", params=[pytest.param(c, marks=[] if c in DEFAULT else [pytest.mark.slow], id=c)
                                        for c in CASES])
def built(request, tmp_path_factory) -> tuple[str, nn.Module, torch.Tensor]:
    """Each case's model in eval mode, built once for every check (pytest groups the tests by case),
    and a small input for it: batch 2, 32 x 32 (the feature maps of ImageNet nets end at 1 x 1), 96 x 96 for FRN."""
    case = request.param
    if case in FORMS:
        path = tmp_path_factory.mktemp("forms") / f"{case}.yaml"
        path.write_text(f"spec_version: 1\n{FORMS[case]}")
    else:
        path = SPECS / f"{case}.yaml"
    torch.manual_seed(0)
    model = build_model(path).eval()
    # With BN's identity statistics each block's branch adds about as much as it gets, so 600 blocks
    # (resnet1202) overflow float32: scale each branch by 1/sqrt(blocks), as Fixup does, to keep every output finite.
    blocks = [m for m in model.modules() if isinstance(m, (ResidualBlock, PreActBlock))]
    with torch.no_grad():
        for m in blocks:
            last = m.last_norm() if isinstance(m, ResidualBlock) else m.last_conv()
            last.weight.mul_(len(blocks) ** -0.5)
    # FRN divides by the root mean square over each map: on the 1 x 1 maps a 32-pixel input leaves after
    # stride 32 it is x / sqrt(x^2 + eps), so steep near 0 that inductor's reordered sums move the logits by
    # 0.1. A 96-pixel input leaves 3 x 3 maps, where it is as well conditioned as the other norms.
    size = 96 if model.spec.norm.type == "frn" else 32
    x = torch.randn(2, model.spec.in_channels, size, size, generator=torch.Generator().manual_seed(1))
    return case, model, x


def _flat(out: object) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else list(out)  # type: ignore[call-overload]


def _assert_equal(got: object, want: object) -> None:
    a, b = _flat(got), _flat(want)
    assert len(a) == len(b)
    for p, q in zip(a, b, strict=True):
        assert torch.isfinite(q).all()
        assert p.shape == q.shape and torch.equal(p, q)


def test_scripts(built):
    _, model, x = built
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, but peers still test it
        scripted = torch.jit.script(model)
        _assert_equal(scripted(x), model(x))
        _assert_equal(scripted.forward_features(x), model.forward_features(x))


def test_fx_traces(built):
    _, model, x = built
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        _assert_equal(traced(x), model(x))


def test_exports_with_a_dynamic_batch(built):
    _, model, x = built
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}}).module()
    with torch.no_grad():
        _assert_equal(exported(x), model(x))
        x3 = torch.cat([x, x[:1]])
        _assert_equal(exported(x3), model(x3))


def test_compiles_without_graph_breaks(built):
    _, model, x = built
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: a graph break is an error
    with torch.no_grad():
        got, want = _flat(compiled(x)), _flat(model(x))
    for p, q in zip(got, want, strict=True):
        assert p.shape == q.shape
        assert (p - q).abs().max() <= COMPILE_RTOL * q.abs().max()


def test_torchvision_feature_extractor(built):
    from torchvision.models.feature_extraction import create_feature_extractor
    _, model, x = built
    info = model.feature_info
    extractor = create_feature_extractor(model, return_nodes={m: str(i) for i, m in enumerate(info.module_name())})
    with torch.no_grad():
        maps = list(extractor(x).values())
        out = model(x)
    assert len(maps) == len(info)
    for m, c, r in zip(maps, info.channels(), info.reduction(), strict=True):
        assert m.shape == (2, c, math.ceil(x.shape[2] / r), math.ceil(x.shape[3] / r))
    if isinstance(out, list):  # a features spec returns exactly the maps feature_info lists
        _assert_equal(maps, out)
    else:
        last = maps[-1]
        norm = getattr(model, "norm", None)  # a pre-activation net's forward_features ends in its final norm + act
        if isinstance(norm, nn.Module):
            with torch.no_grad():
                last = norm(last)
        _assert_equal(last, model.forward_features(x))


def test_backward_gives_every_parameter_a_finite_gradient(built):
    _, model, x = built
    model = copy.deepcopy(model).train()  # train mode updates the norms' running statistics
    x = x.clone().requires_grad_(True)
    loss = sum(t.float().square().mean() for t in _flat(model(x)))
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert bad == []


# --- timm's model interface ------------------------------------------------------------------------------

def test_timm_interface(built):
    _, model, x = built
    spec = model.spec
    keys = model.state_dict()
    cfg = model.pretrained_cfg
    assert cfg is model.default_cfg
    assert cfg["input_size"] == (spec.in_channels, spec.input_size, spec.input_size)
    assert f"{cfg['first_conv']}.weight" in keys
    assert (cfg["crop_pct"], cfg["interpolation"]) == (spec.eval_transform.crop_pct, spec.eval_transform.interpolation)
    assert (cfg["mean"], cfg["std"]) == (spec.eval_transform.mean, spec.eval_transform.std)
    with torch.no_grad():
        out = model(x)
        feats = model.forward_features(x)
    assert feats.shape[1] == model.num_features
    if spec.features is not None:
        assert model.num_classes == 0 and len(out) == len(model.feature_info) == len(spec.features)
        assert [f["index"] for f in model.feature_info] == sorted(spec.features)
        return
    assert model.feature_info[-1]["num_chs"] == model.num_features
    with torch.no_grad():
        _assert_equal(model.forward_head(feats), out)
        pooled = model.forward_head(feats, pre_logits=True)
    if model.num_classes:
        fc = model.get_classifier()
        assert fc is model.get_submodule(cfg["classifier"]) and isinstance(fc, (nn.Linear, nn.Conv2d))
        assert f"{cfg['classifier']}.weight" in keys and out.shape == (2, model.num_classes)
        assert pooled.shape == (2, model.num_features)
    elif spec.head is None:  # head: null returns the unpooled map, as timm's global_pool=""
        _assert_equal(out, feats)
    else:
        assert isinstance(model.get_classifier(), nn.Identity)
        assert not any(k.startswith(f"{cfg['classifier']}.") for k in keys)
        _assert_equal(out, pooled)


def test_reset_classifier():
    model = build_model("resnet18").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        model.reset_classifier(0)
        assert model.num_classes == 0 and "fc.weight" not in model.state_dict()
        assert torch.equal(model(x), feats.mean((2, 3)))
        model.reset_classifier(0, global_pool="")
        assert torch.equal(model(x), feats)
        model.reset_classifier(10, global_pool="avg")
        assert model(x).shape == (2, 10) and model.get_classifier().out_features == 10
        with pytest.raises(ValueError, match="needs num_classes=0"):
            model.reset_classifier(10, global_pool="")
        with pytest.raises(ValueError, match="global_pool"):
            model.reset_classifier(10, global_pool="max")
        with pytest.raises(ValueError, match="num_classes"):
            model.reset_classifier(-1)


@pytest.mark.parametrize("bad", [-3, 2.5, True, 10**7])
def test_build_model_refuses_a_bad_class_count(bad):
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet18", num_classes=bad)


def test_num_classes_0_in_build_model_and_in_a_spec_agree(tmp_path):
    (tmp_path / "pooled.yaml").write_text("spec_version: 1\nextends: resnet18\nhead: {num_classes: 0}\n")
    torch.manual_seed(0)
    a = build_model("resnet18", num_classes=0).eval()
    torch.manual_seed(0)
    b = build_model(tmp_path / "pooled.yaml").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a(x), b(x)) and a(x).shape == (1, 512)
    assert a.state_dict().keys() == b.state_dict().keys()


def test_feature_info_lists_exactly_the_returned_maps(tmp_path):
    (tmp_path / "f.yaml").write_text("spec_version: 1\nextends: resnet50d\nfeatures: [0, 2]\n")
    model = build_model(tmp_path / "f.yaml").eval()
    info = model.feature_info
    assert info.channels() == [64, 512] and info.reduction() == [2, 8]
    assert info.module_name() == ["relu", "layer2"] and info.channels(1) == 512
    with torch.no_grad():
        assert [tuple(m.shape) for m in model(torch.randn(1, 3, 64, 64))] == [(1, 64, 32, 32), (1, 512, 8, 8)]


# --- equal to timm for the timm-named specs ----------------------------------------------------------------

TIMM_SPECS = [
    "resnet18d", "resnet26d", "resnet50c", "resnet50d", "resnet50s", "resnet50t", "seresnet50",
    "ecaresnet50d", "resnext50d_32x4d", "seresnext50_32x4d", "resnet50_gn", "resnetblur50", "resnetaa50d",
    "resnetv2_50", "resnetv2_50d", "resnetv2_50d_gn", "resnetv2_50d_frn", "resnetv2_50d_evos", "resnetv2_50x1_bit",
]
# timm names the stem's activation act1; ours keeps torchvision's relu (no weights, so no key differs).
STEM_ACT = {"act1": "relu"}


@pytest.mark.parametrize("name", TIMM_SPECS)
def test_interface_values_are_timms(name):
    timm = require_timm()
    ref = timm.create_model(name, pretrained=False)
    ours = build_model(name, init="none")
    assert (ours.num_classes, ours.num_features) == (ref.num_classes, ref.num_features)
    assert ours.feature_info.channels() == [f["num_chs"] for f in ref.feature_info]
    assert ours.feature_info.reduction() == [f["reduction"] for f in ref.feature_info]
    assert ours.feature_info.module_name() == [STEM_ACT.get(f["module"], f["module"]) for f in ref.feature_info]
    # crop_pct and interpolation belong to timm's weights: the timm-named specs carry them as input fields.
    for key in ("input_size", "pool_size", "crop_pct", "interpolation", "mean", "std", "first_conv", "classifier",
                "num_classes"):
        assert ours.pretrained_cfg[key] == ref.pretrained_cfg[key], key
    headless = timm.create_model(name, pretrained=False, num_classes=0)
    assert list(build_model(name, num_classes=0, init="none").state_dict()) == list(headless.state_dict())
