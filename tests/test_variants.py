"""Variant tier: dilation, CIFAR nets, feature extraction, drop path and invented networks, each against a
reference where one exists (torchvision, timm, the paper's table)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50 as tv_resnet50

from helpers import random_state, require_timm
from resnet_spec import build_model, load_spec, validate
from resnet_spec.model.analysis import meta_model
from resnet_spec.model.layers import DropPath, EfficientChannelAttention, PadShortcut, SqueezeExcite

timm = require_timm()


def write_spec(tmp_path, text: str, name: str = "variant") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text("spec_version: 1\n" + text)
    return str(path)


def same_outputs(ours: nn.Module, ref: nn.Module, size: int = 64, channels: int = 3) -> None:
    """Strict-load random weights and BN statistics into both, then compare eval outputs bit for bit."""
    state = random_state(ref, seed=3)
    ref.load_state_dict(state, strict=True)
    ours.load_state_dict(state, strict=True)
    x = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got, want = ours.eval()(x), ref.eval()(x)
    if isinstance(want, list):
        assert [t.shape for t in got] == [t.shape for t in want]
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    else:
        assert torch.isfinite(want).all() and want.std() > 0
        assert torch.equal(got, want)


# --- dilation and output stride ---------------------------------------------------------------

@pytest.mark.parametrize("base,channels", [("resnet18", 512), ("resnet50", 2048)])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride_gives_the_feature_map_size(tmp_path, base, channels, output_stride):
    model = build_model(write_spec(tmp_path, f"extends: {base}\noutput_stride: {output_stride}\n")).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 64, 64))
        logits = model(torch.randn(1, 3, 64, 64))
    assert feats.shape == (1, channels, 64 // output_stride, 64 // output_stride)
    assert logits.shape == (1, 1000)
    assert model.feature_info[-1]["reduction"] == output_stride


@pytest.mark.parametrize("output_stride,replace", [(8, [False, True, True]), (16, [False, False, True])])
def test_dilated_resnet50_is_torchvisions(tmp_path, output_stride, replace):
    torch.manual_seed(0)
    ref = tv_resnet50(replace_stride_with_dilation=replace)
    torch.manual_seed(0)
    ours = build_model(write_spec(tmp_path, f"extends: resnet50\noutput_stride: {output_stride}\n"))
    ref_sd, ours_sd = ref.state_dict(), ours.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert all(torch.equal(ours_sd[k], v) for k, v in ref_sd.items())  # seeded init too
    same_outputs(ours, ref)


@pytest.mark.parametrize("name,output_stride", [("resnet18", 8), ("resnet18d", 16), ("resnetaa50d", 8),
                                                ("resnetblur50", 16)])
def test_dilated_timm_variants_are_timms(tmp_path, name, output_stride):
    """torchvision refuses dilation in BasicBlock; timm's resnet18 at output stride 8 is the reference.
    The anti-aliased nets check the stride-1 aa and AvgPool2dSame paths taken under dilation."""
    extra = "zero_init_residual: true\n" if name == "resnet18" else ""  # timm zero-inits by default
    ours = build_model(write_spec(tmp_path, f"extends: {name}\noutput_stride: {output_stride}\n{extra}"))
    ref = timm.create_model(name, pretrained=False, output_stride=output_stride)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    same_outputs(ours, ref)


def test_per_stage_dilation_equals_output_stride(tmp_path):
    """Writing stride 1 and dilation by hand is the same network as output_stride: 8."""
    by_stride = build_model(write_spec(tmp_path, "extends: resnet18\noutput_stride: 8\n", "a"))
    by_hand = build_model(write_spec(tmp_path, "extends: resnet18\nstages: [{}, {}, {stride: 1, dilation: 2}, "
                                               "{stride: 1, dilation: 4}]\n", "b"))
    convs = [(n, m.dilation, m.padding, m.stride) for n, m in by_hand.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs == [(n, m.dilation, m.padding, m.stride) for n, m in by_stride.named_modules()
                     if isinstance(m, nn.Conv2d)]
    assert by_hand.layer4[0].conv1.dilation == (2, 2) and by_hand.layer4[1].conv1.dilation == (4, 4)
    same_outputs(by_hand, by_stride)


# --- each remaining field against the timm constructor argument it stands for ---------------------

FIELDS_VS_TIMM_KWARGS = [
    ("resnet18", dict(down_kernel_size=3, output_stride=8),
     "block: {shortcut_kernel_size: 3}\noutput_stride: 8\n"),
    ("resnet18d", dict(replace_stem_pool=True, aa_layer="blur"), "stem: {pool: conv}\nanti_alias: blur\n"),
    ("resnet26d", dict(replace_stem_pool=True, aa_layer="avg"), "stem: {pool: conv}\nanti_alias: avg\n"),
    ("resnet18", dict(act_layer="silu", block_args=dict(attn_layer="se")),
     "activation: silu\nblock: {attention: {type: se}}\n"),
    ("resnet18", dict(act_layer="leaky_relu"), "activation: leaky_relu\n"),
    ("resnet18", dict(act_layer="gelu"), "activation: gelu\n"),
    ("resnet26d", dict(norm_layer="groupnorm", drop_rate=0.2, num_classes=10, in_chans=1),
     "norm: {type: groupnorm, groups: 32}\nhead: {num_classes: 10, dropout: 0.2}\ninput: {channels: 1}\n"),
]


@pytest.mark.parametrize("base,kwargs,fields", FIELDS_VS_TIMM_KWARGS, ids=lambda v: str(v)[:40])
def test_fields_are_timms_constructor_arguments(tmp_path, base, kwargs, fields):
    if kwargs.get("aa_layer") == "blur":  # timm's stem pool wants a class here, not the string
        kwargs = {**kwargs, "aa_layer": timm.layers.BlurPool2d}
    elif kwargs.get("aa_layer") == "avg":
        kwargs = {**kwargs, "aa_layer": nn.AvgPool2d}
    torch.manual_seed(0)
    ref = timm.create_model(base, pretrained=False, **kwargs)
    torch.manual_seed(0)
    ours = build_model(write_spec(tmp_path, f"extends: {base}\nzero_init_residual: true\n{fields}"))
    ref_sd, ours_sd = ref.state_dict(), ours.state_dict()
    assert [(k, v.shape) for k, v in ours_sd.items()] == [(k, v.shape) for k, v in ref_sd.items()]
    assert all(torch.equal(ours_sd[k], v) for k, v in ref_sd.items())
    same_outputs(ours, ref, channels=kwargs.get("in_chans", 3))


# --- the paper's CIFAR nets -----------------------------------------------------------------------

# He et al. 2015, Table 6: parameters as the paper prints them.
PAPER_PARAMS = {"resnet20": "0.27M", "resnet32": "0.46M", "resnet44": "0.66M", "resnet56": "0.85M",
                "resnet110": "1.7M", "resnet1202": "19.4M"}


@pytest.mark.parametrize("name", list(PAPER_PARAMS))
def test_cifar_parameter_counts_match_the_paper(name):
    spec = load_spec(name)
    n = sum(p.numel() for p in meta_model(spec).parameters())
    printed = PAPER_PARAMS[name]
    digits = len(printed.rstrip("M").partition(".")[2])
    assert f"{n / 1e6:.{digits}f}M" == printed
    assert (spec.input_size, spec.head.num_classes, [s.channels for s in spec.stages]) == (32, 10, [16, 32, 64])


def test_cifar_net_runs_with_parameter_free_option_a_shortcuts():
    model = build_model("resnet20").eval()
    shortcuts = [m.downsample for m in model.modules() if getattr(m, "downsample", None) is not None]
    assert len(shortcuts) == 2 and all(isinstance(s, PadShortcut) for s in shortcuts)
    assert sum(p.numel() for s in shortcuts for p in s.parameters()) == 0
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # The paper's option A as the reference CIFAR code writes it: subsample, pad planes // 4 each side.
    x = torch.randn(2, 16, 32, 32)
    assert torch.equal(shortcuts[0](x), F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 32 // 4, 32 // 4)))


# --- feature extraction ------------------------------------------------------------------------------

@pytest.mark.parametrize("base,features,extra,size", [
    ("resnet50d", [0, 1, 2, 3, 4], "", 64),
    ("resnet18", [0, 2, 4], "output_stride: 8\n", 64),
    ("resnet20", [0, 1, 3], "", 32),
    ("resnet50", [1, 2], "", 64),
])
def test_features_match_feature_info(tmp_path, base, features, extra, size):
    model = build_model(write_spec(tmp_path, f"extends: {base}\nfeatures: {features}\n{extra}")).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, size, size))
    info = {f["index"]: f for f in model.feature_info}
    assert len(outs) == len(features)
    for i, out in zip(features, outs, strict=True):
        c, r = info[i]["num_chs"], info[i]["reduction"]
        assert out.shape == (1, c, size // r, size // r)
    assert len(model.stage_names) == max(features)  # stages after the last requested one are not built


def test_features_are_timms_features_only(tmp_path):
    ours = build_model(write_spec(tmp_path, "extends: resnet50d\nfeatures: [0, 2, 3]\noutput_stride: 16\n"))
    ref = timm.create_model("resnet50d", pretrained=False, features_only=True, out_indices=(0, 2, 3),
                            output_stride=16)
    assert [(f["num_chs"], f["reduction"]) for f in ours.feature_info if f["index"] in (0, 2, 3)] == \
        list(zip(ref.feature_info.channels(), ref.feature_info.reduction(), strict=True))
    same_outputs(ours, ref)


# --- stochastic depth -----------------------------------------------------------------------------

def test_drop_path_follows_the_linear_rule_and_acts_only_in_training(tmp_path):
    dropped = build_model(write_spec(tmp_path, "extends: resnet18d\ndrop_path_rate: 0.5\n", "a"))
    plain = build_model(write_spec(tmp_path, "extends: resnet18d\n", "b"))
    state = random_state(dropped, seed=5)  # random last norms: zero-init branches would drop nothing
    dropped.load_state_dict(state, strict=True)
    plain.load_state_dict(state, strict=True)
    rates = [m.p for m in dropped.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx([0.5 * k / 7 for k in range(1, 8)])  # 8 blocks; the first gets 0, no module
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(dropped.eval()(x), plain.eval()(x))
        torch.manual_seed(0)
        train_out = dropped.train()(x)
        assert not torch.equal(train_out, plain.train()(x))


def test_drop_path_in_training_is_timms(tmp_path):
    ours = build_model(write_spec(tmp_path, "extends: resnet18d\ndrop_path_rate: 0.3\n"))
    ref = timm.create_model("resnet18d", pretrained=False, drop_path_rate=0.3)
    state = random_state(ref, seed=6)
    ref.load_state_dict(state, strict=True)
    ours.load_state_dict(state, strict=True)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        torch.manual_seed(1)
        got = ours.train()(x)
        torch.manual_seed(1)
        want = ref.train()(x)
    assert torch.equal(got, want)


# --- invented and user-written networks --------------------------------------------------------

INVENTED = """\
# An invented network: tiered deep stem with a conv pool, ECA, GroupNorm, SiLU, blur anti-aliasing,
# five stages mixing basic and grouped bottleneck blocks, and one block switched to SE.
input: {size: 64}
stem: {type: deep_tiered, width: 32, pool: conv}
block: {type: bottleneck, shortcut: avg_conv, attention: {type: eca}}
norm: {type: groupnorm, groups: 8}
activation: silu
anti_alias: blur
drop_path_rate: 0.1
stages:
  - {channels: 32, blocks: 1}
  - {channels: 32, blocks: 2, stride: 2, block: {type: basic}}
  - {channels: 64, blocks: 2, stride: 2, block: {groups: 8, width_per_group: 8}}
  - {channels: 64, blocks: 2, stride: 2, overrides: [{index: 1, block: {attention: {type: se, ratio: 0.25}}}]}
  - {channels: 128, blocks: 1, stride: 2, block: {stride_on: 1x1}}
head: {num_classes: 5}
"""


def test_invented_variant_validates_builds_and_runs(tmp_path):
    path = write_spec(tmp_path, INVENTED)
    assert validate(path) == []
    model = build_model(path)
    assert model.stage_names == ["layer1", "layer2", "layer3", "layer4", "layer5"]
    assert isinstance(model.layer4[1].se, SqueezeExcite) and isinstance(model.layer4[0].se, EfficientChannelAttention)
    assert model.layer4[1].se.fc1.out_channels == 64  # 256 * 0.25
    assert model.layer3[0].conv2.groups == 8 and model.layer2[0].conv1.out_channels == 32
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.SiLU) for m in model.modules())
    assert model.layer5[0].aa is not None and model.layer5[0].conv1.stride == (1, 1)
    x = torch.randn(2, 3, 64, 64)
    loss = model.train()(x).logsumexp(1).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 5)
        assert model.forward_features(x).shape == (2, 512, 1, 1)


def test_stem_without_norm_and_with_conv_bias_builds():
    model = build_model("seed001_resnet18").eval()
    keys = model.state_dict().keys()
    assert "conv1.bias" in keys and not any(k.startswith("bn1.") for k in keys)
    assert isinstance(model.bn1, nn.Identity)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_user_written_timm_style_spec_with_extends(tmp_path):
    """Three lines on top of a shipped spec give a timm network nobody shipped: seresnetaa50d."""
    path = write_spec(tmp_path, "# SE-ResNet-50-D with average-pool anti-aliasing\n"
                                "extends: resnetaa50d\nblock: {attention: {type: se}}\n", "seresnetaa50d")
    assert validate(path) == []
    ours = build_model(path)
    ref = timm.create_model("seresnetaa50d", pretrained=False)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    same_outputs(ours, ref)


def test_avg_anti_alias_rejects_an_odd_map_before_a_strided_stage(tmp_path):
    """timm's resnetaa50d fails at run time on a 100px input (25px before layer2); validation says so first."""
    odd = validate(write_spec(tmp_path, "extends: resnetaa50d\ninput: {size: 100}\n", "odd"))
    assert [(e.path, "stages[1] gets a 25px map" in e.message) for e in odd] == [("$.input.size", True)]
    assert validate(write_spec(tmp_path, "extends: resnetaa50d\ninput: {size: 96}\n", "even")) == []
