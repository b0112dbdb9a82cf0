"""What the ``openai`` backend needs, found before anything is sent (``luopan validate``, the start of every run):
the SDK and tenacity, the API key's environment variable and the variables ``env:`` headers read. Nothing here
imports the SDK or touches the network."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any


def _missing(*names: str) -> list[str]:
    out = []
    for name in names:
        if name in sys.modules:
            if sys.modules[name] is None:
                out.append(name)
            continue
        try:
            if importlib.util.find_spec(name) is None:
                out.append(name)
        except (ImportError, ValueError):
            out.append(name)
    return out


def environment() -> list[str]:
    gone = _missing("openai", "tenacity")
    if not gone:
        return []
    what = f"the {gone[0]} package is" if len(gone) == 1 else "the openai and tenacity packages are"
    return [f"{what} not installed: pip install 'luopan[api]'"]


def preflight(p: Any) -> list[str]:
    """``p``: the validated :class:`luopan_openai.params.OpenAIParams`."""
    problems = environment()
    name = p.api_key_env
    if name and not os.environ.get(name, "").strip():
        problems.append(f"environment variable {name} is not set: export {name}=... (the API key of {p.base_url}; "
                        f"api_key_env: null for a server without keys)")
    for header, value in p.extra_headers.items():
        if value.startswith("env:"):
            var = value[4:]
            if not os.environ.get(var, "").strip():
                problems.append(f"extra_headers.{header}: environment variable {var} is not set: export {var}=...")
    return problems
