"""Fine-tuning: start from pretrained weights with a new head, freeze the first stages, give the head its own rate."""
from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import InputError

STEM = ("conv1", "bn1", "maxpool", "stem")  # the stem's modules: torchvision's names, or a pre-activation net's


def load_pretrained(model: nn.Module, source: str) -> list[str]:
    """Load `source` (anything read_weights takes) into model; a classifier of another size keeps its fresh init."""
    from ..model.weights import fit_weights, read_weights
    return fit_weights(model, read_weights(source), reinit_head=True)


def stage_names(model: nn.Module) -> list[str]:
    """layer1..N (stages.0..N-1 in a pre-activation net), in order: the stages a --freeze count walks through."""
    names = getattr(model, "stage_names", None)
    if isinstance(names, list):
        return names
    return [n for n, _ in model.named_children() if n.startswith("layer") and n[5:].isdigit()]


def head_prefix(model: nn.Module) -> str:
    """The classifier's module name: fc, or head.fc in a pre-activation net (its pretrained_cfg says which)."""
    cfg = getattr(model, "pretrained_cfg", None)
    return str(cfg.get("classifier", "fc")) if isinstance(cfg, dict) else "fc"


def frozen_modules(model: nn.Module, stages: int) -> list[nn.Module]:
    """The stem and the first `stages` stages, which fine-tuning leaves as the weights had them."""
    if stages == 0:
        return []
    names = stage_names(model)
    if stages > len(names):
        raise InputError(f"freeze {stages}: the model has {len(names)} stages", setting="freeze")
    return [getattr(model, n) for n in STEM if hasattr(model, n)] + [model.get_submodule(n) for n in names[:stages]]


def freeze(model: nn.Module, stages: int) -> list[nn.Module]:
    """Stop gradients in the stem and the first `stages` stages; return those modules, to be kept in eval mode
    (their BatchNorm statistics frozen too) after every model.train()."""
    modules = frozen_modules(model, stages)
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)
    return modules


def param_groups(model: nn.Module, lr: float, head_lr_scale: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: the body at `lr`, the head at `lr * head_lr_scale`."""
    prefix = head_prefix(model) + "."
    head = [p for n, p in model.named_parameters() if n.startswith(prefix) and p.requires_grad]
    body = [p for n, p in model.named_parameters() if not n.startswith(prefix) and p.requires_grad]
    groups = [{"params": body, "lr": lr}]
    if head_lr_scale != 1.0 and head:
        groups.append({"params": head, "lr": lr * head_lr_scale})
    else:
        groups[0]["params"] = body + head
    return groups
