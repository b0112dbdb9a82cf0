"""Meta-tests: every hook is documented and exercised, so the plugin API cannot rot silently."""

from __future__ import annotations

import inspect
from pathlib import Path

from luopan import hookimpl, hookspecs
from luopan.cli import main
from luopan.plugins import REGISTRATION_HOOKS, load_registry

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
HOOKS = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("luopan_")]


def test_every_hook_has_a_docstring_and_is_documented():
    doc = DOCS.read_text(encoding="utf-8")
    assert len(HOOKS) >= 11
    for name in HOOKS:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), name
        assert f"`{name}(" in doc, f"{name} missing from docs/plugins.md"


def test_every_registration_hook_is_wired():
    assert set(REGISTRATION_HOOKS.values()) | {"luopan_register_presets", "luopan_register_commands"} == {
        h for h in HOOKS if h.startswith("luopan_register_")}


class Recorder:
    """Implements every life-cycle hook and every registration hook, recording calls."""

    calls: list[str] = []

    @staticmethod
    @hookimpl
    def luopan_register_presets(register):
        register("model", "recorded_fake", {"backend": "fake", "kind": "base"})

    @staticmethod
    @hookimpl
    def luopan_validate_config(config, source):
        Recorder.calls.append(f"validate:{len(config.models)}")

    @staticmethod
    @hookimpl
    def luopan_run_start(run):
        Recorder.calls.append("run_start")

    @staticmethod
    @hookimpl
    def luopan_unit_start(unit):  # fewer arguments than the spec: allowed
        Recorder.calls.append(f"unit_start:{unit.id}")

    @staticmethod
    @hookimpl
    def luopan_unit_finish(run, unit, result):
        Recorder.calls.append(f"unit_finish:{unit.id}:{result.error}")

    @staticmethod
    @hookimpl
    def luopan_run_finish(run, results):
        Recorder.calls.append(f"run_finish:{len(results)}")


def test_life_cycle_hooks_are_called_in_order(tmp_path):
    import toy_plugin

    from luopan.plugins import reset_registry

    Recorder.calls = []
    reset_registry(load_registry(extra_plugins=[("toy", toy_plugin), ("rec", Recorder)]))
    try:
        p = tmp_path / "r.yaml"
        p.write_text(f"run: {{output_dir: {tmp_path}}}\nmodels: [{{preset: recorded_fake}}]\n"
                     "datasets: [{loader: toy}]\n", encoding="utf-8")
        assert main(["run", str(p), "--no-progress"]) == 0
    finally:
        reset_registry(None)
    assert Recorder.calls == ["validate:1", "run_start", "unit_start:recorded_fake/toy",
                              "unit_finish:recorded_fake/toy:None", "run_finish:1"]


def test_validate_config_hook_can_reject(tmp_path, capsys):
    import toy_plugin

    from luopan.errors import ConfigError
    from luopan.plugins import reset_registry

    class Rejecter:
        @staticmethod
        @hookimpl
        def luopan_validate_config(config):
            if any(m.backend == "fake" for m in config.models):
                raise ConfigError("policy: the fake backend is not allowed here")

    reset_registry(load_registry(extra_plugins=[("toy", toy_plugin), ("rej", Rejecter)]))
    try:
        p = tmp_path / "r.yaml"
        p.write_text("models: [{preset: fake}]\ndatasets: [{loader: toy}]\n", encoding="utf-8")
        assert main(["validate", str(p)]) == 2
    finally:
        reset_registry(None)
    assert f"{p}: policy: the fake backend is not allowed here" in capsys.readouterr().err
