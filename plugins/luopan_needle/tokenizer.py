"""Token counting for the needle grid: the evaluated model's own tokenizer, or ``chars``.

The dataset is built once per run, before any model is loaded, so it names its tokenizer itself: ``chars`` (one
token per character, no model needed), a local folder, a hub id (offline: only if cached), or ``pkg:<package>``
with an optional ``gguf_file`` (the backends' path rules, from :mod:`luopan.models`). A GGUF's
tokenizer is extracted once and kept in a cache folder (``$LUOPAN_NEEDLE_CACHE``, default
``~/.cache/luopan/needle``); the hf backend's own converted folder is used when it exists.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from luopan import models
from luopan.deps import require
from luopan.errors import ConfigError
from luopan.tokenization import hf_chat_prompt

log = logging.getLogger("luopan.needle")

WHO = "needle: tokenizer"
_PLACEHOLDER = "luopan needle placeholder"
_WINDOW_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


class NeedleTokenizer(ABC):
    """What the grid builder needs from a tokenizer."""

    #: the model's context window read from its files (None: unknown)
    window: int | None = None
    #: tokens a chat template (or a BOS token) adds around one user turn
    overhead: int = 0

    @abstractmethod
    def starts(self, text: str) -> np.ndarray:
        """The character offset at which each token of ``text`` starts (int64, non-decreasing)."""

    @abstractmethod
    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Token counts of plain texts (no special tokens)."""

    def count(self, text: str) -> int:
        return self.count_many([text])[0]

    @abstractmethod
    def identity(self) -> dict[str, Any]: ...


class CharTokenizer(NeedleTokenizer):
    """One token per character: a model-free stand-in (API models without a local tokenizer, tests)."""

    def starts(self, text: str) -> np.ndarray:
        return np.arange(len(text), dtype=np.int64)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [len(t) for t in texts]

    def identity(self) -> dict[str, Any]:
        return {"tokenizer": "chars"}


class HFTokenizer(NeedleTokenizer):
    """A transformers tokenizer; the Rust ``tokenizers`` backend (offsets, batches) when it has one."""

    def __init__(self, tok: Any, *, name: str, window: int | None, fingerprint: str = "") -> None:
        self.tok = tok
        self.name = name
        self.fingerprint = fingerprint
        self.fast = getattr(tok, "backend_tokenizer", None)
        self.window = window
        self.overhead = self._overhead()

    def starts(self, text: str) -> np.ndarray:
        if self.fast is not None:
            offsets = self.fast.encode(text, add_special_tokens=False).offsets
        else:
            offsets = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(offsets))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        if self.fast is not None:
            return [len(e.ids) for e in self.fast.encode_batch(list(texts), add_special_tokens=False)]
        return [len(self.tok.encode(t, add_special_tokens=False)) for t in texts]

    def _overhead(self) -> int:
        """Tokens around the user text: the chat template's (one user turn and the assistant header, as the hf
        backend renders it) or the plain prompt's special tokens (BOS), whichever is larger."""
        plain = self.count(_PLACEHOLDER)
        extra = len(self.tok.encode(_PLACEHOLDER)) - plain
        if getattr(self.tok, "chat_template", None):
            rendered = hf_chat_prompt(self.tok, [{"role": "user", "content": _PLACEHOLDER}])
            extra = max(extra, len(self.tok.encode(rendered)) - plain)
        return max(0, extra)

    def identity(self) -> dict[str, Any]:
        ident: dict[str, Any] = {"tokenizer": self.name}
        if self.fingerprint:
            ident["fingerprint"] = self.fingerprint
        return ident


def cache_root() -> Path:
    root = os.environ.get("LUOPAN_NEEDLE_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "luopan" / "needle"


def window_from_config(folder: Path, tok: Any = None) -> int | None:
    """The context window from a model folder's config.json (text_config first), else the tokenizer's
    ``model_max_length`` when it is a real number (transformers uses 1e30 for 'unknown')."""
    cfg_file = folder / "config.json"
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        for c in (cfg.get("text_config") or {}, cfg):
            for k in _WINDOW_KEYS:
                if isinstance(c.get(k), int) and c[k] > 0:
                    return int(c[k])
    v = getattr(tok, "model_max_length", None)
    if isinstance(v, int) and 0 < v < 10**7:
        return v
    return None


def gguf_window(path: Path) -> int | None:
    """``<architecture>.context_length`` from a GGUF file's metadata."""
    gguf = require("gguf", extra="hf", component="needle tokenizer (gguf_file)")
    reader = gguf.GGUFReader(str(path))

    def field(name: str) -> Any:
        f = reader.fields.get(name)
        return None if f is None else f.parts[f.data[0]]

    arch = field("general.architecture")
    if arch is None:
        return None
    v = field(f"{bytes(arch).decode()}.context_length")
    return int(v[0]) if v is not None else None


def load_tokenizer(spec: str, gguf_file: str | None = None) -> NeedleTokenizer:
    """``chars``, or a transformers tokenizer from a folder, a hub id or ``pkg:<package>`` (+ ``gguf_file``)."""
    if spec == "chars":
        if gguf_file:
            raise ConfigError("needle: gguf_file needs a tokenizer path, not 'chars'")
        return CharTokenizer()
    transformers = require("transformers", extra="hf", component="needle tokenizer")
    resolved = models.resolve(spec, who=WHO)
    offline = resolved.local is not None or os.environ.get("HF_HUB_OFFLINE") == "1"
    kwargs: dict[str, Any] = {"local_files_only": True} if offline else {}
    if not gguf_file:
        source = str(resolved.local) if resolved.local is not None else spec
        tok = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
        window = window_from_config(resolved.local, tok) if resolved.local is not None else None
        if window is None and resolved.local is None:
            cfg = transformers.AutoConfig.from_pretrained(spec, **kwargs)
            window = next((getattr(cfg, k) for k in _WINDOW_KEYS if isinstance(getattr(cfg, k, None), int)), None)
        return HFTokenizer(tok, name=spec, window=window)
    if resolved.local is None:
        raise ConfigError(f"needle: tokenizer '{spec}' with gguf_file: give a local folder or pkg:<package>")
    fp = models.fingerprint(models.gguf_parts(resolved, gguf_file, who=WHO))
    folder = _gguf_tokenizer_dir(transformers, resolved, gguf_file, fp, kwargs)
    tok = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return HFTokenizer(tok, name=f"{spec}#{gguf_file}", window=window_from_config(folder, tok), fingerprint=fp)


def _gguf_tokenizer_dir(transformers: Any, resolved: Any, gguf_file: str, fp: str, kwargs: dict[str, Any]) -> Path:
    """A plain tokenizer folder for a GGUF: the converted folder the hf backend made (:func:`luopan.models.convert_gguf`),
    else ours (made once)."""
    converted = models.find_converted(fp)
    if converted is not None and (converted / "config.json").is_file():
        return converted
    target = cache_root() / f"tok-{fp[:24]}"
    if (target / "needle-tokenizer.json").is_file():
        return target
    gguf = models.ensure_gguf(resolved, gguf_file, who=WHO)
    log.info("needle: extracting the tokenizer of %s once (cached in %s)", gguf, target)
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **kwargs)
    window = gguf_window(gguf)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        tok.save_pretrained(tmp)
        if window:
            (tmp / "config.json").write_text(json.dumps({"max_position_embeddings": window}) + "\n")
        (tmp / "needle-tokenizer.json").write_text(json.dumps({"gguf": str(gguf), "fingerprint": fp}) + "\n")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
    except OSError as exc:  # a read-only cache folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConfigError(
            f"needle: cannot cache the GGUF tokenizer in {target} ({exc}); set LUOPAN_NEEDLE_CACHE") from None
    return target
