"""Optional dependencies, checked when a component is used, not when luopan starts."""

from __future__ import annotations

import importlib
from types import ModuleType

from luopan.errors import MissingDependencyError


def require(module: str, *, extra: str, component: str) -> ModuleType:
    """Import ``module`` or raise a one-line error saying which ``pip install`` brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{component} needs the Python package '{module.split('.')[0]}' ({exc}); "
            f"install it with: pip install 'luopan[{extra}]'"
        ) from exc
