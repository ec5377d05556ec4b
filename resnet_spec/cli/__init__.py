"""The command line: main() parses and dispatches; each command is one module beside it."""
from .main import main

__all__ = ["main"]
