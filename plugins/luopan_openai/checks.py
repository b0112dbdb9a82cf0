"""What the ``openai`` backend needs, found before anything is sent (``luopan validate``, the start of every run):
the SDK and tenacity, the API key's environment variable and the variables ``env:`` headers read. Nothing here
imports the SDK or touches the network."""

from __future__ import annotations

import os
from typing import Any

from luopan.deps import missing, missing_line


def environment() -> list[str]:
    gone = missing("openai", "tenacity")
    return [missing_line(gone, "api")] if gone else []


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
