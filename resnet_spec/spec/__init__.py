"""The spec layer: YAML text to a validated, frozen ResNetSpec and its layout plan. Never imports torch."""
from .load import load_spec, validate
from .types import ResNetSpec

__all__ = ["ResNetSpec", "load_spec", "validate"]
