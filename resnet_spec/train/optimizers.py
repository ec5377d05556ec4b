"""The optimizers a training run can use: one name -> factory table.

torch is imported when a factory runs, not with this module, so the CLI takes its --optimizer choices
from the table without importing torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, TypeAlias

    import torch
    from torch import nn

    # Parameters, or parameter groups ({"params": [...], "lr": ...}) as torch's optimizers take them.
    Params: TypeAlias = Sequence[nn.Parameter] | Sequence[dict[str, Any]]


class OptimizerFactory(Protocol):
    """Makes an optimizer over `params` from the run's hyperparameters (each uses those it has)."""

    def __call__(self, params: Params, *, lr: float, momentum: float,
                 weight_decay: float) -> torch.optim.Optimizer: ...


def sgd(params: Params, *, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD with momentum and L2 weight decay: torchvision's ImageNet recipe."""
    import torch
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def adamw(params: Params, *, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW: weight decay decoupled from the gradient step (momentum is Adam's own betas, not `momentum`)."""
    import torch
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def adam(params: Params, *, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam with L2 weight decay added to the gradient (momentum is Adam's own betas, not `momentum`)."""
    import torch
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


OPTIMIZERS: dict[str, OptimizerFactory] = {"sgd": sgd, "adamw": adamw, "adam": adam}
