"""resnet-spec: ResNet-family networks written as YAML, compiled to torch modules."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .api import list_specs, load_spec, validate
from .errors import ErrorRecord, ResNetSpecError, SpecError
from .spec.types import ResNetSpec

__all__ = ["ErrorRecord", "ResNetSpec", "ResNetSpecError", "SpecError", "build_model", "list_specs", "load_model",
           "load_spec", "validate"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    # Type checkers see build_model's real signature, and no module __getattr__ that would hide a typo.
    from .model.factory import build_model
    from .model.load import load_model
else:
    def __getattr__(name: str) -> object:
        # The builder imports torch; keep it out of `import resnet_spec` so validation stays fast.
        if name == "build_model":
            from .model.factory import build_model
            return build_model
        if name == "load_model":
            from .model.load import load_model
            return load_model
        raise AttributeError(f"module 'resnet_spec' has no attribute {name!r}")
