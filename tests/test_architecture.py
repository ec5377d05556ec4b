"""Architecture tier: layers import downwards only, the library never imports the CLI, the spec layer needs no torch.

The layers, lowest first: base (errors, resources, fileio, registry) < spec < model < tools < train < cli.
`resnet_spec/__init__.py` and `api.py` are the public facade: they may import any layer but the CLI, and at
module level only base and spec (torch-importing layers lazily). `__main__.py` is the entry point and may
import anything. Imports are read from the source (every nesting level, relative ones resolved), so an import
inside a function counts as much as one at the top. An import under `if TYPE_CHECKING:` counts for the layer
order (it is still a dependency) but not as run at import time.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ROOT

PACKAGE = ROOT / "resnet_spec"
LAYERS = ("base", "spec", "model", "tools", "train", "cli")
RANK = {name: i for i, name in enumerate(LAYERS)}
BASE = ("errors", "resources", "fileio", "registry")
FACADE = ("resnet_spec", "resnet_spec.api")
# Top-level modules that belong to a layer but live at the top for a short import path:
# `from resnet_spec.testing import assert_same_network` is a tool, at the tools layer.
TOP = {"testing": "tools"}
ENTRY = "resnet_spec.__main__"
TORCH = ("torch", "torchvision", "timm")


@dataclass(frozen=True)
class Import:
    """One module a source file imports: its absolute name, the line, and whether it runs when the file is imported."""

    target: str
    line: int
    at_import: bool


def module_name(path: Path) -> str:
    """resnet_spec/train/loop.py -> resnet_spec.train.loop; a package's __init__.py is the package."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve(module: str, package: bool, level: int, name: str | None) -> str:
    """The absolute module of `from <level dots><name> import ...` written in `module`."""
    if level == 0:
        return name or ""
    parts = module.split(".")
    base = parts if package else parts[:-1]
    if level > 1:
        base = base[:-(level - 1)]
    return ".".join(base + ([name] if name else []))


def _is_type_checking(test: ast.expr) -> bool:
    """`TYPE_CHECKING` or `typing.TYPE_CHECKING`."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _deferred(tree: ast.AST) -> set[int]:
    """ids of the import nodes that do not run when the module is imported: those in a function body (they run
    when it is called) and those under `if TYPE_CHECKING:` (they never run)."""
    bodies: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            bodies.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            bodies.extend(node.body)
    return {id(n) for body in bodies for n in ast.walk(body) if isinstance(n, (ast.Import, ast.ImportFrom))}


def imports_of(source: str, module: str, package: bool = False) -> list[Import]:
    """Every import in `source` (the text of `module`), at any nesting level, as absolute module names.

    `from . import data` names the submodule resnet_spec.train.data; `from .. import __version__` names
    resnet_spec.__version__, which `layer_of` reads as the package's facade.
    """
    tree = ast.parse(source)
    deferred = _deferred(tree)
    found: list[Import] = []
    for node in ast.walk(tree):
        now = id(node) not in deferred
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno, now) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                continue
            base = _resolve(module, package, node.level, node.module)
            if node.module is None:  # `from . import a, b`: each name is a module of the package
                found.extend(Import(f"{base}.{alias.name}", node.lineno, now) for alias in node.names)
            else:
                found.append(Import(base, node.lineno, now))
    return sorted(found, key=lambda i: (i.line, i.target))


def layer_of(name: str) -> str | None:
    """The layer of a module of ours: 'base', 'spec' ... 'cli', 'facade' or 'entry'; None for another package's."""
    parts = name.split(".")
    if parts[0] != "resnet_spec":
        return None
    if len(parts) == 1 or parts[1] == "api":
        return "facade"
    if parts[1] == "__main__":
        return "entry"
    if parts[1] in BASE:
        return "base"
    if parts[1] in TOP:
        return TOP[parts[1]]
    if parts[1] in LAYERS:
        return parts[1]
    return "facade"  # `from .. import X` where X is no module: an attribute of resnet_spec/__init__.py


def violations(source: str, module: str, package: bool = False) -> list[str]:
    """Each import of `module` that goes up the layers, reaches the CLI from outside it, or skips the facade rule."""
    layer = layer_of(module)
    out = []
    for imp in imports_of(source, module, package):
        target = layer_of(imp.target)
        if target is None or layer == "entry":
            continue
        where = f"{module}:{imp.line}: imports {imp.target}"
        if layer == "facade":
            if target == "cli":
                out.append(f"{where} (the facade never imports the CLI)")
            elif imp.at_import and target not in ("base", "spec", "facade"):
                out.append(f"{where} at module level (the facade imports torch-importing layers lazily)")
        elif target in ("facade", "entry"):
            if layer != "cli":
                out.append(f"{where} (only the CLI may use the public facade; import the layer itself)")
        elif RANK[target] > RANK[layer]:
            out.append(f"{where} (layer {target} is above {layer})")
    return out


def cli_imports(source: str, module: str, package: bool = False) -> list[str]:
    """Each import of resnet_spec.cli (or a module in it) in `source`."""
    return [f"{module}:{imp.line}: imports {imp.target}" for imp in imports_of(source, module, package)
            if imp.target == "resnet_spec.cli" or imp.target.startswith("resnet_spec.cli.")]


def torch_imports(source: str, module: str, package: bool = False) -> list[str]:
    """Each import of torch (or torchvision, timm) in `source`, at any nesting level."""
    return [f"{module}:{imp.line}: imports {imp.target}" for imp in imports_of(source, module, package)
            if imp.target.split(".")[0] in TORCH]


def cross_test_imports(source: str, module: str) -> list[str]:
    """Each import of a test module or conftest in `source`: shared test code belongs in helpers.py."""
    return [f"{module}:{imp.line}: imports {imp.target}" for imp in imports_of(source, module)
            if imp.target.split(".")[0] == "conftest" or imp.target.split(".")[0].startswith("test_")]


def _sources() -> list[tuple[Path, str, str]]:
    return [(p, module_name(p), p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))]


# --- the package as it is -----------------------------------------------------------------------------


def test_every_module_has_a_layer():
    unplaced = [name for _, name, _ in _sources() if layer_of(name) not in (*LAYERS, "facade", "entry")
                or (layer_of(name) == "facade" and name not in FACADE)]
    assert unplaced == [], "put each module in a layer (a subpackage) or a base module listed in BASE"


def test_layers_import_downwards_only():
    found = [v for path, name, text in _sources() for v in violations(text, name, is_package(path))]
    assert found == []


def test_only_the_cli_imports_the_cli():
    found = [v for path, name, text in _sources() if layer_of(name) not in ("cli", "entry")
             for v in cli_imports(text, name, is_package(path))]
    assert found == []


def test_spec_and_base_never_import_torch():
    found = [v for path, name, text in _sources() if layer_of(name) in ("base", "spec")
             for v in torch_imports(text, name, is_package(path))]
    assert found == []


def test_no_test_module_imports_another():
    found = [v for p in sorted((ROOT / "tests").glob("*.py"))
             for v in cross_test_imports(p.read_text(encoding="utf-8"), p.stem)]
    assert found == []


PROBE = """
import sys
{code}
print("torch" in sys.modules, sorted(m for m in sys.modules if m.split(".")[0] in {torch!r}))
"""

SPEC_LAYER = """
import importlib, pkgutil
import resnet_spec, resnet_spec.spec, resnet_spec.api
for info in pkgutil.iter_modules(resnet_spec.spec.__path__, "resnet_spec.spec."):
    importlib.import_module(info.name)
spec = resnet_spec.load_spec("resnet50")
assert spec.name == "resnet50", spec.name
assert resnet_spec.validate("resnet50") == []
assert resnet_spec.api.validate("resnet18") == []
"""


def torch_after(code: str) -> tuple[bool, str]:
    """Whether torch is in sys.modules after running `code` in a fresh interpreter, and the modules it loaded."""
    proc = subprocess.run([sys.executable, "-c", PROBE.format(code=code, torch=TORCH)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded, modules = proc.stdout.strip().splitlines()[-1].split(" ", 1)
    return loaded == "True", modules


def test_loading_and_validating_a_spec_imports_no_torch():
    loaded, modules = torch_after(SPEC_LAYER)
    assert not loaded, f"the spec layer imported {modules}"


# --- the checks themselves can fail --------------------------------------------------------------------


def test_relative_imports_resolve():
    text = "from . import data, loaders\nfrom ..spec.types import ResNetSpec\nfrom .. import __version__\n"
    assert [i.target for i in imports_of(text, "resnet_spec.train.loop")] == [
        "resnet_spec.train.data", "resnet_spec.train.loaders", "resnet_spec.spec.types", "resnet_spec.__version__"]
    assert [i.target for i in imports_of("from .load import load_spec\n", "resnet_spec.spec", package=True)] == [
        "resnet_spec.spec.load"]
    assert [i.target for i in imports_of("from ...errors import E\n", "resnet_spec.model.sub.x")] == [
        "resnet_spec.errors"]


@pytest.mark.parametrize("module, text", [
    ("resnet_spec.model.limits", "def hint():\n    from ..cli.common import flag\n    return flag\n"),
    ("resnet_spec.tools.export", "import resnet_spec.cli.main\n"),
    ("resnet_spec.train.loop", "from resnet_spec.cli import main\n"),
    ("resnet_spec.spec.rules", "class A:\n    def f(self):\n        from .. import cli\n"),
    ("resnet_spec.errors", "from .cli.common import describe\n"),
    ("resnet_spec.api", "def f():\n    from .cli import main\n"),
])
def test_a_cli_import_outside_the_cli_is_found(module, text):
    assert len(cli_imports(text, module)) == 1
    assert len(violations(text, module)) == 1


@pytest.mark.parametrize("module, text", [
    ("resnet_spec.cli.main", "from ..errors import ResNetSpecError\n"),
    ("resnet_spec.__main__", "from .cli import main\n"),
])
def test_the_cli_and_the_entry_point_may_import_the_cli(module, text):
    assert violations(text, module) == []


@pytest.mark.parametrize("module, text, allowed", [
    ("resnet_spec.spec.rules", "from ..model.layers import make_norm\n", False),
    ("resnet_spec.spec.rules", "def f():\n    from ..tools import diagram\n", False),
    ("resnet_spec.model.build", "from ..train.loop import TrainConfig\n", False),
    ("resnet_spec.tools.compare", "from resnet_spec.train import data\n", False),
    ("resnet_spec.errors", "from .spec.types import ResNetSpec\n", False),
    ("resnet_spec.fileio", "from .errors import OutputError\n", True),
    ("resnet_spec.model.limits", "from ..api import load_spec\n", False),
    ("resnet_spec.train.loop", "from ..model.factory import build_model\nfrom ..spec import types\n", True),
    ("resnet_spec.cli.export", "from ..tools.export import EXPORTERS\nfrom ..api import load_spec\n", True),
    ("resnet_spec.api", "from .model.factory import build_model\n", False),
    ("resnet_spec.api", "def f():\n    from .model.factory import build_model\n", True),
    ("resnet_spec", "from .spec.load import load_spec\n", True),
    ("resnet_spec", "if TYPE_CHECKING:\n    from .model.factory import build_model\n", True),
    ("resnet_spec.api", "if typing.TYPE_CHECKING:\n    pass\nelse:\n    from .model import factory\n", False),
    ("resnet_spec.spec.rules", "if TYPE_CHECKING:\n    from ..model.layers import make_norm\n", False),
])
def test_the_layer_order_is_enforced(module, text, allowed):
    assert (violations(text, module) == []) == allowed


@pytest.mark.parametrize("text, found", [
    ("from test_timm_parity import random_state, timm\n", 1),
    ("from conftest import SPECS\n", 1),
    ("def f():\n    import test_cli\n", 1),
    ("from helpers import SPECS\nimport pytest\n", 0),
])
def test_a_test_module_importing_another_is_found(text, found):
    assert len(cross_test_imports(text, "test_variants")) == found


def test_a_torch_import_is_found_at_any_depth():
    text = "import os\ndef f():\n    if True:\n        import torch.nn as nn\n"
    assert torch_imports(text, "resnet_spec.spec.rules") == ["resnet_spec.spec.rules:4: imports torch.nn"]


def test_the_probe_sees_torch():
    loaded, modules = torch_after("import torch.nn")
    assert loaded and "torch.nn" in modules
