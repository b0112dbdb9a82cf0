"""registry.yaml: the reviewed catalogue of presets (models, datasets, runs) and the plugin index.

Entry points stay the source of truth for code; the index says which plugin provides what, so a run naming
a component of a plugin that failed to load gets that plugin's original error, and a test checks the index
against what plugins really register.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from luopan.errors import ConfigError
from luopan.yamlpos import load_located_file

if TYPE_CHECKING:
    from luopan.plugins import Registry

SECTIONS = {"models": "model", "datasets": "dataset", "runs": "run"}


def load_catalogue(reg: Registry, path: Path) -> None:
    loc = load_located_file(path)
    data = loc.data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the catalogue must be a mapping")
    unknown = set(data) - set(SECTIONS) - {"plugins"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{loc.where((key,))}: unknown section '{key}' (expected {sorted(SECTIONS) + ['plugins']})")
    for section, kind in SECTIONS.items():
        for name, fields in (data.get(section) or {}).items():
            if not isinstance(fields, dict):
                raise ConfigError(f"{loc.where((section, name))}: preset '{name}' must be a mapping")
            reg.add_preset(kind, str(name), fields, f"{path.name}:{loc.line((section, name))}")
    reg.catalogue = {str(p["name"]): p for p in (data.get("plugins") or []) if isinstance(p, dict) and "name" in p}
