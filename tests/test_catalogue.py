"""registry.yaml's plugin index must match what the plugins really register, and every preset must resolve."""

from __future__ import annotations

from luopan.plugins import load_registry


def test_plugin_index_matches_registered_components():
    reg = load_registry()
    loaded = {p.name: p for p in reg.plugins if p.ok}
    for name, entry in reg.catalogue.items():
        assert name in loaded, f"registry.yaml lists plugin '{name}' but no such plugin loaded"
        provided = {(k, n) for k, n in loaded[name].components}
        listed = {(kind[:-1], n) for kind, names in entry.get("provides", {}).items() for n in names}
        assert provided == listed, f"plugin '{name}': registry.yaml says {sorted(listed)}, registers {sorted(provided)}"
    builtin = {p.name for p in reg.plugins if p.distribution == "luopan"}
    assert builtin <= set(reg.catalogue), f"plugins missing from registry.yaml: {builtin - set(reg.catalogue)}"


def test_every_preset_names_a_registered_component():
    reg = load_registry()
    for name, p in reg.presets["model"].items():
        assert p.fields.get("backend") in reg.components["backend"], name
    for name, p in reg.presets["dataset"].items():
        assert p.fields.get("loader") in reg.components["dataset"], name
        comp = reg.components["dataset"][p.fields["loader"]]
        comp.validate_params(p.fields.get("params", {}))
