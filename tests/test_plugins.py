"""Plugin loading: entry points, failure isolation, strict mode, duplicates, optional dependencies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from luopan.errors import DuplicateComponentError, PluginLoadError
from luopan.plugins import load_registry

FIXTURES = Path(__file__).parent / "fixtures"


def _install(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    target = tmp_path_factory.mktemp(name)
    src = tmp_path_factory.mktemp(name + "-src") / name
    shutil.copytree(FIXTURES / name, src)  # building writes build/ next to the sources: keep the repo clean
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
         str(target), str(src)],
        check=True, capture_output=True,
    )
    return target


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory):
    """tests/fixtures/luopan-broken pip-installed into its own folder (put on PYTHONPATH per call)."""
    return _install(tmp_path_factory, "luopan-broken")


@pytest.fixture(scope="module")
def dupe_site(tmp_path_factory):
    return _install(tmp_path_factory, "luopan-dupe")


def luopan(*args: str, site: Path | None = None, env: dict[str, str] | None = None, cwd: Path | None = None):
    e = dict(os.environ)
    e.pop("LUOPAN_STRICT_PLUGINS", None)
    if site is not None:
        e["PYTHONPATH"] = str(site) + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "luopan.cli", *args], capture_output=True, text=True, env=e,
                          cwd=cwd)


def test_builtin_plugins_come_from_the_entry_point_group():
    reg = load_registry()
    dists = {p.name: p.distribution for p in reg.plugins}
    assert dists["fake"] == "luopan"
    assert dists["summary"] == "luopan"
    assert reg.components["backend"]["fake"].plugin.name == "fake"


def test_broken_plugin_is_listed_with_its_error(broken_site):
    r = luopan("plugins", site=broken_site)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("broken "))
    assert "luopan-broken" in line
    assert "ModuleNotFoundError" in line and "luopan_dependency_that_is_not_installed" in line


def test_broken_plugin_does_not_break_unrelated_commands(broken_site):
    r = luopan("list", "backends", site=broken_site)
    assert r.returncode == 0, r.stderr
    assert "fake" in r.stdout


def test_run_naming_a_broken_plugins_component_fails_with_the_original_error(broken_site, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("models:\n  - backend: broken\ndatasets:\n  - preset: cmmlu\n", encoding="utf-8")
    r = luopan("run", str(cfg), site=broken_site, cwd=tmp_path)
    assert r.returncode == 2
    assert "failed to load" in r.stderr and "luopan_dependency_that_is_not_installed" in r.stderr
    assert f"{cfg}:2" in r.stderr


def test_strict_mode_makes_a_load_failure_fatal(broken_site):
    r = luopan("list", site=broken_site, env={"LUOPAN_STRICT_PLUGINS": "1"})
    assert r.returncode == 2
    assert "plugin 'broken' (luopan-broken) failed to load" in r.stderr


def test_disabled_plugin_is_skipped(broken_site):
    r = luopan("plugins", site=broken_site, env={"LUOPAN_DISABLE_PLUGINS": "broken"})
    assert r.returncode == 0
    assert not any(ln.startswith("broken ") for ln in r.stdout.splitlines())


def test_missing_optional_dependency_is_reported_when_used_not_at_start(broken_site, tmp_path):
    assert luopan("list", site=broken_site).returncode == 0  # start-up is fine
    cfg = tmp_path / "run.yaml"
    cfg.write_text("models:\n  - backend: needs_dep\ndatasets:\n  - preset: cmmlu\n    subsets: [agronomy]\n"
                   "    limit_per_subset: 1\n", encoding="utf-8")
    r = luopan("run", str(cfg), site=broken_site, cwd=tmp_path)
    assert r.returncode == 2
    assert "pip install 'luopan[absent-sdk]'" in r.stderr
    assert "luopan_absent_sdk" in r.stderr


def test_two_plugins_registering_one_name_is_an_error_naming_both(dupe_site, tmp_path):
    r = luopan("plugins", site=dupe_site)
    assert "CONFLICT" in r.stdout and "luopan-dupe" in r.stdout and "distribution luopan)" in r.stdout
    cfg = tmp_path / "run.yaml"
    cfg.write_text("models:\n  - backend: fake\ndatasets:\n  - preset: cmmlu\n", encoding="utf-8")
    r = luopan("run", str(cfg), site=dupe_site, cwd=tmp_path)
    assert r.returncode == 2
    assert "registered twice" in r.stderr and "luopan-dupe" in r.stderr and "distribution luopan" in r.stderr


def test_duplicate_is_fatal_in_strict_mode(dupe_site):
    r = luopan("list", site=dupe_site, env={"LUOPAN_STRICT_PLUGINS": "1"})
    assert r.returncode == 2 and "registered twice" in r.stderr


def test_duplicate_never_silently_overrides_in_process(monkeypatch):
    monkeypatch.delenv("LUOPAN_STRICT_PLUGINS", raising=False)

    class Clash:
        @staticmethod
        @__import__("luopan").hookimpl
        def luopan_register_backends(register):
            register("fake", object)

    reg = load_registry(extra_plugins=[("clash", Clash)])
    with pytest.raises(DuplicateComponentError, match="registered twice"):
        reg.get("backend", "fake")


def test_failed_provider_is_found_through_the_catalogue():
    reg = load_registry()
    from luopan.plugins import PluginInfo

    info = PluginInfo("mcq_x", "luopan-x", "1", "luopan_x", error="ImportError: boom", exception=ImportError("boom"))
    reg.plugins.append(info)
    reg.catalogue["mcq_x"] = {"provides": {"datasets": ["x_loader"]}}
    with pytest.raises(PluginLoadError, match="boom"):
        reg.get("dataset", "x_loader")


def test_plugin_failing_inside_its_registration_hook_is_isolated_and_rolled_back(broken_site):
    r = luopan("plugins", site=broken_site)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("broken_register "))
    assert "RuntimeError: registration exploded" in line
    r = luopan("which", "half_registered", site=broken_site)
    assert r.returncode == 2  # its partial registration was undone


def test_duplicate_in_process_is_fatal_in_strict_mode(monkeypatch):
    monkeypatch.setenv("LUOPAN_STRICT_PLUGINS", "1")

    class Clash:
        @staticmethod
        @__import__("luopan").hookimpl
        def luopan_register_backends(register):
            register("fake", object)

    with pytest.raises(DuplicateComponentError, match="LUOPAN_STRICT_PLUGINS=1"):
        load_registry(extra_plugins=[("clash", Clash)])


def test_components_registered_by_name_are_imported_only_when_used():
    code = (
        "import sys\n"
        "from luopan.plugins import load_registry\n"
        "reg = load_registry()\n"
        "heavy = ('luopan_needle.dataset', 'luopan_code.evaluator', 'luopan_bench.dataset', 'luopan_hf.backend')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "reg.get('dataset', 'needle').params\n"
        "print('luopan_needle.dataset' in sys.modules, 'luopan_code.evaluator' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["[]", "True False"]


def test_a_lazily_registered_component_that_fails_to_import_names_its_plugin_and_target(monkeypatch):
    monkeypatch.delenv("LUOPAN_STRICT_PLUGINS", raising=False)

    class Lazy:
        @staticmethod
        @__import__("luopan").hookimpl
        def luopan_register_evaluators(register):
            register("lazy_ok", "luopan_mcq.accuracy:AccuracyEvaluator")
            register("lazy_broken", "luopan_no_such_module.sub:Thing", params="luopan_mcq.accuracy:Nope")

    reg = load_registry(extra_plugins=[("lazy", Lazy)])
    assert reg.get("evaluator", "lazy_ok").factory.__name__ == "AccuracyEvaluator"
    with pytest.raises(PluginLoadError, match=r"plugin 'lazy'.*luopan_no_such_module\.sub:Thing.*ModuleNotFoundError"):
        reg.get("evaluator", "lazy_broken").build({})
    info = next(p for p in reg.plugins if p.name == "lazy")
    assert not info.ok and "luopan_no_such_module" in (info.error or "")


def test_a_malformed_lazy_reference_is_refused_at_registration():
    class Bad:
        @staticmethod
        @__import__("luopan").hookimpl
        def luopan_register_runners(register):
            register("bad_ref", "luopan_local.runner.LocalRunner")

    with pytest.raises(ValueError, match="not 'module:attr'"):
        load_registry(extra_plugins=[("bad", Bad)])


def test_luopan_plugins_imports_every_component_and_reports_the_broken_ones(tmp_path):
    pkg = tmp_path / "luopan_lazy_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from luopan import hookimpl\n\n"
        "@hookimpl\n"
        "def luopan_register_evaluators(register):\n"
        "    register('lazy_demo', 'luopan_lazy_demo.missing:Evaluator')\n"
    )
    dist = tmp_path / "luopan_lazy_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: luopan-lazy-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[luopan]\nlazy_demo = luopan_lazy_demo\n")
    r = luopan("plugins", site=tmp_path)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("lazy_demo "))
    assert "FAILED: luopan_lazy_demo.missing:Evaluator: ModuleNotFoundError" in line
    r = luopan("list", "evaluators", site=tmp_path)  # listing does not import: still listed
    assert "lazy_demo" in r.stdout
