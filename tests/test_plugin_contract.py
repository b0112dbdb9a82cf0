"""Plugins are not libraries for each other: code two plugins need lives in the kernel (``luopan.models``,
``luopan.tokenization``, ``luopan.backend_errors``, ``luopan.prompts``, ``luopan.data``, ``luopan.files``).

Every module of every plugin under ``plugins/`` is parsed (not imported) and its imports are checked: an
``import``/``from`` statement, ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name,
and ``"module:attr"`` registration targets. A backend plugin imports the kernel and its own engine only; no
plugin imports the internals of ``luopan_hf`` or ``luopan_mcq``; any other import of one plugin by another must
be listed in :data:`ALLOWED` with its reason.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"

#: backend plugins: the kernel and their own engine, never another plugin
BACKENDS = frozenset({"luopan_hf", "luopan_llamacpp", "luopan_vllm", "luopan_lmdeploy", "luopan_openai",
                      "luopan_fake"})
#: plugins whose modules others used as a library; what they shared is in the kernel now
NO_INTERNALS = frozenset({"luopan_hf", "luopan_mcq"})
#: (importing plugin, imported plugin) -> why it is allowed
ALLOWED: dict[tuple[str, str], str] = {
    ("luopan_bench", "luopan_generic"): (
        "the bench dataset is a collection of benchmarks built on the `files` loader: it subclasses "
        "FilesDataset and adds Sources for its reader interface (luopan_generic.readers), one component on "
        "another's documented extension point, not a helper borrowed from it"
    ),
}
#: model libraries the shared kernel modules must not import when they are imported
HEAVY = ("torch", "transformers", "numpy", "llama_cpp", "vllm", "lmdeploy", "openai", "aiohttp", "gguf",
         "safetensors", "tokenizers", "pyarrow", "datasets")
SHARED_KERNEL = ("luopan.models", "luopan.backend_errors", "luopan.tokenization", "luopan.prompts",
                 "luopan.data", "luopan.files")

_TARGET = re.compile(r"^(luopan_\w+)(?:\.[\w.]+)?:\w[\w.]*$")


def plugin_packages(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.name.startswith("luopan_") and (p / "__init__.py").is_file())


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every absolute import the file makes, by statement or by literal name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = _TARGET.match(node.value)
            if m:
                yield node.lineno, node.value.split(":")[0]


def cross_imports(root: Path) -> Iterator[tuple[str, str, str]]:
    """``(importer, imported plugin, "file:line: module")`` for every import of one plugin by another."""
    packages = plugin_packages(root)
    names = {p.name for p in packages}
    for pkg in packages:
        for f in sorted(pkg.rglob("*.py")):
            for line, module in imported_modules(f):
                top = module.split(".")[0]
                if top in names and top != pkg.name:
                    yield pkg.name, top, f"{f.relative_to(root)}:{line}: {module}"


def violations(root: Path) -> list[str]:
    out = []
    for importer, imported, where in cross_imports(root):
        if importer in BACKENDS:
            out.append(f"{where}: backend plugin {importer} imports plugin {imported} "
                       f"(backends import the kernel and their own engine only)")
        elif imported in NO_INTERNALS:
            out.append(f"{where}: {importer} imports {imported}'s internals (the shared code is in the kernel)")
        elif (importer, imported) not in ALLOWED:
            out.append(f"{where}: {importer} imports plugin {imported}; move the shared code to the kernel, or "
                       f"list the pair in ALLOWED with its reason")
    return out


def test_plugins_import_the_kernel_not_each_other():
    assert violations(PLUGINS) == []


def test_every_allowed_cross_plugin_import_is_still_made_and_has_a_reason():
    made = {(a, b) for a, b, _ in cross_imports(PLUGINS)}
    for pair, reason in ALLOWED.items():
        assert pair in made, f"{pair} is no longer imported: remove it from ALLOWED"
        assert pair[0] not in BACKENDS and pair[1] not in NO_INTERNALS and reason.strip()


def test_the_kernel_imports_no_plugin():
    names = {p.name for p in plugin_packages(PLUGINS)}
    found = [f"{f.name}:{line}: {m}" for f in sorted((REPO / "core" / "luopan").rglob("*.py"))
             for line, m in imported_modules(f) if m.split(".")[0] in names]
    assert found == []


def test_the_check_finds_what_plugins_used_to_import_from_each_other(tmp_path):
    """The imports this contract replaced, in a throwaway plugins folder: each one is a violation."""
    sources = {
        "luopan_hf": {"paths.py": "X = 1\n"},
        "luopan_mcq": {"templates.py": "X = 1\n"},
        "luopan_generic": {"readers.py": "X = 1\n"},
        "luopan_llamacpp": {"engine.py": "from luopan_hf import paths\nfrom luopan_hf.errors import describe\n"},
        "luopan_openai": {"local_server.py": "def f():\n    from luopan_hf.paths import resolve\n"},
        "luopan_needle": {"tokenizer.py": "import importlib\nimportlib.import_module('luopan_hf.model')\n"},
        "luopan_code": {"dataset.py": "from luopan_mcq.templates import PromptTemplate\n"},
        "luopan_bench": {"dataset.py": "from luopan_generic.readers import X\n"},
        "luopan_judge": {"__init__.py": "T = 'luopan_generic.dataset:FilesDataset'\n"},
    }
    for pkg, files in sources.items():
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").touch()
        for name, text in files.items():
            (tmp_path / pkg / name).write_text(text)
    found = violations(tmp_path)
    assert [v.split(":")[0] for v in found] == [
        "luopan_code/dataset.py",
        "luopan_judge/__init__.py",
        "luopan_llamacpp/engine.py",
        "luopan_llamacpp/engine.py",
        "luopan_needle/tokenizer.py",
        "luopan_openai/local_server.py",
    ], found


def test_shared_kernel_modules_import_no_model_library():
    code = (
        "import sys\n"
        f"for m in {SHARED_KERNEL!r}: __import__(m)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at import time: {out.stdout.strip()}"
