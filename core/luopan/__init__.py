"""luopan (罗盘): a plugin-based microkernel for evaluating large language models.

The kernel imports no model library, and this package imports nothing at all until a name is used: ``import
luopan`` stays cheap (and an interrupted start-up has almost nothing to interrupt). Plugins implement
:mod:`luopan.hookspecs` and are discovered through the ``luopan`` entry-point group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]

if TYPE_CHECKING:
    from luopan.hookspecs import hookimpl


def __getattr__(name: str) -> Any:
    if name == "hookimpl":
        from luopan.hookspecs import hookimpl

        return hookimpl
    raise AttributeError(f"module 'luopan' has no attribute {name!r}")
