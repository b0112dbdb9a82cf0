"""The plugin contract: plugins use the kernel's public API only (``luopan.__all__`` and the public support
modules' own ``__all__``), and docs/plugins.md documents exactly that surface."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import luopan

REPO = Path(__file__).resolve().parents[1]
PLUGIN_ROOTS = [REPO / "plugins", REPO / "contrib"]


def public_names() -> set[str]:
    return {n for n in luopan.__all__ if not n.startswith("__")}


def module_public(module: str) -> set[str]:
    return set(getattr(importlib.import_module(f"luopan.{module}"), "__all__", ()))


def violations(source: str, filename: str = "<plugin>") -> list[str]:
    """Every use of a kernel name that is not public, in one module's source."""
    tree = ast.parse(source, filename)
    bad: list[str] = []
    top = public_names()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mod = node.module
            if mod == "luopan":
                for a in node.names:
                    if a.name not in top and a.name not in luopan.PUBLIC_MODULES:
                        bad.append(f"{filename}:{node.lineno}: from luopan import {a.name}")
            elif mod.startswith("luopan."):
                sub = mod.split(".", 1)[1]
                allowed = module_public(sub) if sub in luopan.PUBLIC_MODULES else set()
                for a in node.names:
                    if a.name in allowed or (a.name in top and luopan._HOME.get(a.name) == sub):
                        continue
                    bad.append(f"{filename}:{node.lineno}: from {mod} import {a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("luopan.") and a.name.split(".", 1)[1] not in luopan.PUBLIC_MODULES:
                    bad.append(f"{filename}:{node.lineno}: import {a.name}")
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "luopan"
              and node.attr not in top and node.attr not in luopan.PUBLIC_MODULES and node.attr != "__version__"):
            bad.append(f"{filename}:{node.lineno}: luopan.{node.attr}")
    return bad


def plugin_files() -> list[Path]:
    files = []
    for root in PLUGIN_ROOTS:
        files += [f for f in root.rglob("*.py") if "build" not in f.parts and "tests" not in f.parts]
    return sorted(files)


def test_every_public_name_exists():
    for name in public_names():
        getattr(luopan, name)
    for module in luopan.PUBLIC_MODULES:
        names = module_public(module)
        assert names, f"luopan.{module} declares no __all__"
        mod = importlib.import_module(f"luopan.{module}")
        for name in names:
            assert hasattr(mod, name), f"luopan.{module}.{name}"


def test_built_in_and_contrib_plugins_use_only_public_kernel_names():
    found = []
    for f in plugin_files():
        found += violations(f.read_text(encoding="utf-8"), str(f.relative_to(REPO)))
    assert not found, "plugins use kernel names that are not public:\n" + "\n".join(found)


@pytest.mark.parametrize("source", [
    "from luopan.pipeline import Run\n",
    "from luopan.plugins import get_registry\n",
    "from luopan.cache import canonical_json\n",
    "import luopan.resolver\n",
    "import luopan\nluopan.execution.RunContext\n",
    "from luopan import pipeline\n",
])
def test_a_plugin_using_a_non_public_kernel_name_fails_the_contract(source):
    assert violations(source), source


def test_the_public_api_passes_the_contract():
    assert not violations("from luopan import Backend, Dataset, hookimpl, models\n"
                          "from luopan.components import Evaluator\nfrom luopan.data import find_data\n")


def test_docs_describe_exactly_the_public_surface():
    doc = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    missing = sorted(n for n in public_names() if f"`{n}`" not in doc)
    assert not missing, f"docs/plugins.md does not describe: {missing}"
    for module in luopan.PUBLIC_MODULES:
        assert f"`luopan.{module}`" in doc, module
