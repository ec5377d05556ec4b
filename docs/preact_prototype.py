"""Prototype: a pre-activation ResNet (timm ResNetV2 names) built from a small config dict.

No timm import in the model code; timm is used only in the check at the bottom.
Run:  python /work/preact_proto/preact.py [model ...]      (SIZE=65 ... for another input size)
      python /work/preact_proto/preact.py cifar            (the He et al. 2016 CIFAR parameter counts)
"""
import sys
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------- layers
def get_padding(k, stride=1, dilation=1):
    return ((stride - 1) + dilation * (k - 1)) // 2


class StdConv2d(nn.Conv2d):
    """Weight standardization, timm's formula: per output channel over (in, kh, kw),
    biased variance, w' = (w - mean) / sqrt(var + eps), via F.batch_norm(training=True)."""

    def __init__(self, cin, cout, k, stride=1, dilation=1, groups=1, bias=False, eps=1e-6):
        super().__init__(cin, cout, k, stride=stride, padding=get_padding(k, stride, dilation),
                         dilation=dilation, groups=groups, bias=bias)
        self.eps = eps

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         training=True, momentum=0., eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def make_conv(cfg):
    kind = cfg.get("conv", {"type": "plain"})
    if kind["type"] == "std":
        eps = kind.get("eps", 1e-6)
        return lambda cin, cout, k, stride=1, dilation=1, groups=1: StdConv2d(
            cin, cout, k, stride, dilation, groups, eps=eps)
    return lambda cin, cout, k, stride=1, dilation=1, groups=1: nn.Conv2d(
        cin, cout, k, stride=stride, padding=get_padding(k, stride, dilation),
        dilation=dilation, groups=groups, bias=False)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm2d + ReLU in one module (keys: weight, bias, running_*, num_batches_tracked)."""

    def __init__(self, c, eps=1e-5):
        super().__init__(c, eps=eps)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        if self.training:
            self.num_batches_tracked.add_(1)
        bn_training = self.training or self.running_mean is None
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, bn_training, self.momentum, self.eps)
        return self.act(x)


class GroupNormAct(nn.GroupNorm):
    def __init__(self, c, groups=32, eps=1e-5):
        super().__init__(groups, c, eps=eps)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))


class FilterResponseNormTlu2d(nn.Module):
    """FRN + TLU: y = max(gamma * x * rsqrt(mean_hw(x^2) + eps) + beta, tau), eps 1e-5."""

    def __init__(self, c, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.tau = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        v = (1, -1, 1, 1)
        x = x * x.square().float().mean(dim=(2, 3), keepdim=True).add(self.eps).rsqrt().to(x.dtype).expand(x.shape)
        x = x * self.weight.view(v).to(x.dtype) + self.bias.view(v).to(x.dtype)
        return torch.maximum(x, self.tau.reshape(v).to(x.dtype))


class EvoNorm2dS0(nn.Module):
    """EvoNorm-S0: y = x * sigmoid(v * x) / group_std(x) * gamma + beta, 32 groups, eps 1e-5."""

    def __init__(self, c, groups=32, eps=1e-5):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.v = nn.Parameter(torch.ones(c))

    def group_std(self, x):
        B, C, H, W = x.shape
        g = x.reshape(B, self.groups, C // self.groups, H, W)
        std = g.float().var(dim=(2, 3, 4), unbiased=False, keepdim=True).add(self.eps).sqrt().to(x.dtype)
        return std.expand(g.shape).reshape(B, C, H, W)

    def forward(self, x):
        vs = (1, -1, 1, 1)
        # Same expression order as timm: the std is computed after the sigmoid gate. Computing it first
        # gives bit-equal outputs but gradients that differ at rounding level (~1e-9): autograd sums the
        # three contributions to dL/dx in graph order.
        x = x * (x * self.v.view(vs).to(x.dtype)).sigmoid() / self.group_std(x)
        return x * self.weight.view(vs).to(x.dtype) + self.bias.view(vs).to(x.dtype)


def make_norm(cfg):
    n = cfg.get("norm", {"type": "batchnorm"})
    t = n["type"]
    if t == "batchnorm":
        return lambda c: BatchNormAct2d(c, eps=n.get("eps", 1e-5))
    if t == "groupnorm":
        return lambda c: GroupNormAct(c, groups=n.get("groups", 32), eps=n.get("eps", 1e-5))
    if t == "frn":
        return lambda c: FilterResponseNormTlu2d(c, eps=n.get("eps", 1e-5))
    if t == "evonorm_s0":
        return lambda c: EvoNorm2dS0(c, groups=n.get("groups", 32), eps=n.get("eps", 1e-5))
    raise KeyError(t)


# ---------------------------------------------------------------- shortcuts and blocks
class DownsampleConv(nn.Module):
    def __init__(self, cin, cout, stride, dilation, conv):
        super().__init__()
        self.conv = conv(cin, cout, 1, stride=stride)
        self.norm = nn.Identity()        # preact: no norm on the projection

    def forward(self, x):
        return self.norm(self.conv(x))


class DownsampleAvg(nn.Module):
    def __init__(self, cin, cout, stride, dilation, conv):
        super().__init__()
        avg_stride = stride if dilation == 1 else 1
        if stride > 1 or dilation > 1:
            # timm: AvgPool2dSame when avg_stride == 1 and dilation > 1 (output_stride < 32 only)
            self.pool = nn.AvgPool2d(2, avg_stride, ceil_mode=True, count_include_pad=False)
        else:
            self.pool = nn.Identity()
        self.conv = conv(cin, cout, 1, stride=1)
        self.norm = nn.Identity()

    def forward(self, x):
        return self.norm(self.conv(self.pool(x)))


class PreActBlock(nn.Module):
    """Shared forward: norm1 (the pre-activation) feeds both the shortcut projection and conv1."""
    n_convs = 0

    def forward(self, x):
        xp = self.norm1(x)
        shortcut = self.downsample(xp) if self.downsample is not None else x
        y = self.conv1(xp)
        y = self.conv2(self.norm2(y))
        if self.n_convs == 3:
            y = self.conv3(self.norm3(y))
        return y + shortcut


class PreActBasic(PreActBlock):
    n_convs = 2

    def __init__(self, cin, cout, mid, stride, dilation, first_dilation, groups, proj, conv, norm):
        super().__init__()
        # basic: projection only where shape changes (timm PreActBasic)
        if proj is not None and (stride != 1 or first_dilation != dilation or cin != cout):
            self.downsample = proj(cin, cout, stride, dilation, conv)
        else:
            self.downsample = None
        self.norm1 = norm(cin)
        self.conv1 = conv(cin, mid, 3, stride=stride, dilation=first_dilation, groups=groups)
        self.norm2 = norm(mid)
        self.conv2 = conv(mid, cout, 3, dilation=dilation, groups=groups)


class PreActBottleneck(PreActBlock):
    n_convs = 3

    def __init__(self, cin, cout, mid, stride, dilation, first_dilation, groups, proj, conv, norm):
        super().__init__()
        # bottleneck: the first block of every stage always projects (timm), even 64 -> 256 stride 1
        self.downsample = proj(cin, cout, stride, dilation, conv) if proj is not None else None
        self.norm1 = norm(cin)
        self.conv1 = conv(cin, mid, 1)
        self.norm2 = norm(mid)
        self.conv2 = conv(mid, mid, 3, stride=stride, dilation=first_dilation, groups=groups)
        self.norm3 = norm(mid)
        self.conv3 = conv(mid, cout, 1)


class Stage(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(x)


def make_divisible(v, divisor=8, round_limit=.9):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


# ---------------------------------------------------------------- the network
class PreActResNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        conv, norm = make_conv(cfg), make_norm(cfg)
        wf = cfg.get("width_factor", 1)
        stem = cfg.get("stem", {})
        stype, spool = stem.get("type", "conv7"), stem.get("pool", "max")
        sw = make_divisible(stem.get("width", 64) * wf)
        in_chans = cfg.get("in_chans", 3)
        s = OrderedDict()
        if stype in ("deep", "tiered"):
            c = (3 * sw // 8, sw // 2) if stype == "tiered" else (sw // 2, sw // 2)
            s["conv1"] = conv(in_chans, c[0], 3, stride=2)
            s["norm1"] = norm(c[0])
            s["conv2"] = conv(c[0], c[1], 3)
            s["norm2"] = norm(c[1])
            s["conv3"] = conv(c[1], sw, 3)
        elif stype == "conv7":
            s["conv"] = conv(in_chans, sw, 7, stride=2)
        elif stype == "conv3":                       # CIFAR: 3x3 stride 1, no pool
            s["conv"] = conv(in_chans, sw, 3, stride=1)
        if spool == "max_fixed_pad":                  # BiT: ConstantPad2d(1, 0) + MaxPool(3, 2, 0)
            s["pad"] = nn.ConstantPad2d(1, 0.)
            s["pool"] = nn.MaxPool2d(3, 2, 0)
        elif spool == "max":
            s["pool"] = nn.MaxPool2d(3, 2, 1)
        self.stem = nn.Sequential(s)

        basic = cfg.get("block", "bottleneck") == "basic"
        bottle = cfg.get("bottle_ratio", 1.0 if basic else 0.25)
        proj0 = DownsampleAvg if cfg.get("shortcut", "conv") == "avg_conv" else DownsampleConv
        output_stride = cfg.get("output_stride", 32)
        curr_stride = 1 if stype == "conv3" else 4
        dilation, prev = 1, sw
        first_strides = cfg.get("strides", [1] + [2] * (len(cfg["layers"]) - 1))
        self.stages = nn.Sequential()
        for i, (d, c) in enumerate(zip(cfg["layers"], cfg["channels"])):
            cout = make_divisible(c * wf)
            stride = first_strides[i]
            if curr_stride >= output_stride:
                dilation *= stride
                stride = 1
            first_dil = 1 if dilation in (1, 2) else 2
            blocks, proj = [], proj0
            for b in range(d):
                st = stride if b == 0 else 1
                mid = make_divisible(cout * bottle)
                blk = (PreActBasic if basic else PreActBottleneck)(
                    prev, cout, mid, st, dilation, first_dil, cfg.get("groups", 1), proj, conv, norm)
                blocks.append(blk)
                prev, first_dil, proj = cout, dilation, None
            curr_stride *= stride
            self.stages.add_module(str(i), Stage(blocks))
        self.num_features = prev
        self.norm = norm(prev)                       # final pre-activation norm + act
        self.head = nn.Module()
        self.head.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head.fc = nn.Conv2d(prev, cfg.get("num_classes", 1000), 1, bias=True)
        self.head.flatten = nn.Flatten(1)
        self._init(cfg.get("zero_init_last", False))

    def _init(self, zero_init_last):
        # the same visiting order as timm's named_apply (children first, registration order)
        for name, m in _post_order(self):
            if isinstance(m, nn.Linear) or (name.startswith("head.fc") and isinstance(m, nn.Conv2d)):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif zero_init_last and isinstance(m, PreActBlock):
                nn.init.zeros_((m.conv3 if m.n_convs == 3 else m.conv2).weight)

    def forward(self, x):
        x = self.norm(self.stages(self.stem(x)))
        x = self.head.fc(self.head.global_pool(x))
        return self.head.flatten(x)


def _post_order(module, name=""):
    for cname, child in module.named_children():
        yield from _post_order(child, f"{name}.{cname}" if name else cname)
    yield name, module


# ---------------------------------------------------------------- timm model -> config
R50 = dict(layers=[3, 4, 6, 3], channels=[256, 512, 1024, 2048])
R101 = dict(R50, layers=[3, 4, 23, 3])
R152 = dict(R50, layers=[3, 8, 36, 3])
BASIC = dict(block="basic", channels=[64, 128, 256, 512])
D = dict(stem={"type": "deep"}, shortcut="avg_conv")
BIT = dict(stem={"type": "conv7", "pool": "max_fixed_pad"}, conv={"type": "std", "eps": 1e-8},
           norm={"type": "groupnorm", "groups": 32})

TIMM = {
    "resnetv2_18": dict(BASIC, layers=[2, 2, 2, 2]),
    "resnetv2_18d": dict(BASIC, layers=[2, 2, 2, 2], **D),
    "resnetv2_34": dict(BASIC, layers=[3, 4, 6, 3]),
    "resnetv2_34d": dict(BASIC, layers=[3, 4, 6, 3], **D),
    "resnetv2_50": dict(R50),
    "resnetv2_50d": dict(R50, **D),
    "resnetv2_50t": dict(R50, stem={"type": "tiered"}, shortcut="avg_conv"),
    "resnetv2_101": dict(R101),
    "resnetv2_101d": dict(R101, **D),
    "resnetv2_152": dict(R152),
    "resnetv2_152d": dict(R152, **D),
    "resnetv2_50d_gn": dict(R50, norm={"type": "groupnorm", "groups": 32}, **D),
    "resnetv2_50d_evos": dict(R50, norm={"type": "evonorm_s0", "groups": 32}, **D),
    "resnetv2_50d_frn": dict(R50, norm={"type": "frn"}, **D),
    "resnetv2_50x1_bit": dict(R50, width_factor=1, **BIT),
    "resnetv2_50x3_bit": dict(R50, width_factor=3, **BIT),
    "resnetv2_101x1_bit": dict(R101, width_factor=1, **BIT),
    "resnetv2_101x3_bit": dict(R101, width_factor=3, **BIT),
    "resnetv2_152x2_bit": dict(R152, width_factor=2, **BIT),
    "resnetv2_152x4_bit": dict(R152, width_factor=4, **BIT),
}

# He et al. 2016 (Identity Mappings), CIFAR-10: 3x3 conv of 16, three stages of n bottlenecks,
# outputs 64/128/256 (inner 16/32/64), final BN-ReLU, global pool, fc to 10 classes.
CIFAR = {
    "preact_resnet164": dict(layers=[18] * 3, channels=[64, 128, 256], strides=[1, 2, 2],
                             stem={"type": "conv3", "width": 16, "pool": "none"}, num_classes=10),
    "preact_resnet1001": dict(layers=[111] * 3, channels=[64, 128, 256], strides=[1, 2, 2],
                              stem={"type": "conv3", "width": 16, "pool": "none"}, num_classes=10),
}


def randomize_stats(model, seed=1):
    """Random norm affine params and BN running stats; conv weights keep the (kaiming) seeded init so
    that activations stay finite through 50 blocks (randn*0.1 conv weights overflow resnetv2_152)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point() or t.dim() != 1 or name.startswith("head."):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith((".weight", ".v")):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:  # bias, running_mean, tau
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)


def check(name, size=64, dtype=torch.float32):
    import timm
    cfg = TIMM[name]
    torch.manual_seed(0)
    ref = timm.create_model(name)
    torch.manual_seed(0)
    ours = PreActResNet(cfg)
    rk, ok = list(ref.state_dict()), list(ours.state_dict())
    keys = rk == ok
    shapes = keys and all(ref.state_dict()[k].shape == ours.state_dict()[k].shape for k in rk)
    init = keys and shapes and all(torch.equal(ref.state_dict()[k], ours.state_dict()[k]) for k in rk)
    randomize_stats(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.eval(), ours.eval()
    ref.to(dtype), ours.to(dtype)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2), dtype=dtype)
    with torch.no_grad():
        a, b = ref(x), ours(x)
    eq = torch.equal(a, b)
    finite = bool(torch.isfinite(a).all())
    n = sum(p.numel() for p in ours.parameters())
    print(f"{name:22s} keys={keys} shapes={shapes} seeded_init={init} outputs_equal={eq} "
          f"maxdiff={(a - b).abs().max().item():.3g} finite={finite} out_absmax={a.abs().max().item():.3g} params={n:,}", flush=True)
    # train mode: batch statistics, running-stat updates and gradients must agree too
    ref.train(), ours.train()
    a2, b2 = ref(x), ours(x)
    train_eq = torch.equal(a2, b2)
    a2.square().mean().backward(), b2.square().mean().backward()
    grads = dict(ours.named_parameters())
    grad_eq = all(torch.equal(p.grad, grads[k].grad) for k, p in ref.named_parameters())
    bufs_eq = all(torch.equal(t, ours.state_dict()[k]) for k, t in ref.state_dict().items())
    eq = eq and train_eq and grad_eq and bufs_eq
    print(f"{'':22s} train (batch 2, {size} px): outputs_equal={train_eq} grads_equal={grad_eq} state_after_step_equal={bufs_eq}")
    return keys and shapes and init and eq and finite


def cifar_counts():
    for name, cfg in CIFAR.items():
        m = PreActResNet(cfg)
        n = sum(p.numel() for p in m.parameters())
        convs = sum(p.numel() for k, p in m.named_parameters() if "conv" in k and k.endswith("weight"))
        norms = sum(p.numel() for k, p in m.named_parameters() if "norm" in k)
        fc = sum(p.numel() for k, p in m.named_parameters() if k.startswith("head"))
        y = m(torch.randn(1, 3, 32, 32)) if name.endswith("164") else None
        print(f"{name}: params={n:,} (conv weights {convs:,}, norm affine {norms:,}, fc {fc:,})"
              + (f" out={tuple(y.shape)}" if y is not None else ""))


if __name__ == "__main__":
    torch.set_num_threads(1)
    names = sys.argv[1:] or ["resnetv2_50", "resnetv2_50d", "resnetv2_50x1_bit",
                             "resnetv2_50d_gn", "resnetv2_50d_frn", "resnetv2_50d_evos"]
    if names == ["cifar"]:
        cifar_counts()
    else:
        import os
        size = int(os.environ.get("SIZE", "64"))  # input size, e.g. SIZE=65 for odd feature maps
        results = {n: check(n, size=size) for n in names}
        print("all match:", all(results.values()))
