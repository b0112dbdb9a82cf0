"""Optional dependencies and devices: imported when a component is used, not when luopan starts, and found
without importing anything by the checks run before a run (``Component.environment`` / ``preflight``)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

from luopan.errors import MissingDependencyError

__all__ = ["require", "installed", "missing", "missing_line", "cuda_gpus", "cuda_engine_problems", "gpu_count_problem"]


def require(module: str, *, extra: str, component: str) -> ModuleType:
    """Import ``module`` or raise a one-line error saying which ``pip install`` brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{component} needs the Python package '{module.split('.')[0]}' ({exc}); "
            f"install it with: pip install 'luopan[{extra}]'"
        ) from exc


def installed(name: str) -> bool:
    """Whether the top-level package ``name`` can be imported, found without importing it (a ``None`` in
    ``sys.modules`` is how Python marks a package as not importable)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing(*names: str) -> list[str]:
    """Which of the top-level packages ``names`` cannot be imported here."""
    return [name for name in names if not installed(name)]


def missing_line(names: list[str], extra: str) -> str:
    """``the x and y packages are not installed: pip install 'luopan[extra]'``."""
    what = (f"the {names[0]} package is" if len(names) == 1
            else f"the {', '.join(names[:-1])} and {names[-1]} packages are")
    return f"{what} not installed: pip install 'luopan[{extra}]'"


def cuda_gpus() -> int | None:
    """NVIDIA GPUs this process may use, found without importing torch: 0 when there is certainly none, None when
    one seems present but cannot be counted (nvidia-smi on PATH, a ROCm device, WSL's GPU)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    try:
        n = sum(1 for _ in Path("/proc/driver/nvidia/gpus").iterdir())
    except OSError:
        n = 0
    if not n:
        n = sum(1 for _ in Path("/dev").glob("nvidia[0-9]*")) if Path("/dev").is_dir() else 0
    if not n:
        return None if shutil.which("nvidia-smi") or Path("/dev/kfd").exists() or Path("/dev/dxg").exists() else 0
    if visible:
        n = min(n, len([x for x in visible.split(",") if x.strip()]))
    return n


def cuda_engine_problems(package: str, *, extra: str) -> list[str]:
    """Why a CUDA-only engine (vLLM, LMDeploy) cannot run here: its package is missing, or there is no CUDA GPU."""
    problems = []
    if not installed(package):
        problems.append(f"{missing_line([package], extra)} (on a machine with a CUDA GPU)")
    if cuda_gpus() == 0:
        problems.append(f"{package} needs a CUDA GPU and none was found on this machine; use backend: hf or llamacpp "
                        "here (luopan run ... --backend hf)")
    return problems


def gpu_count_problem(option: str, wanted: int) -> list[str]:
    """An engine option asking for more GPUs (tensor parallelism) than this machine has, with the fix."""
    gpus = cuda_gpus()
    if gpus and wanted > gpus:
        return [f"{option} {wanted} needs as many GPUs and this machine has {gpus}; set {option}: {gpus}"]
    return []
