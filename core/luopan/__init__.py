"""luopan (罗盘): a plugin-based microkernel for evaluating large language models.

The kernel imports no model library: ``import luopan`` stays cheap. Plugins implement
:mod:`luopan.hookspecs` and are discovered through the ``luopan`` entry-point group.
"""

from luopan.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
