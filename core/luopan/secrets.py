"""Secrets: every credential luopan resolves (API keys, ``env:`` headers) and credential-like environment
variables are redacted from every text luopan writes or prints (files, run.log, stdout, stderr)."""

from __future__ import annotations

import os
import re
from typing import Any

SECRET_KEYS = re.compile(r"(api[_-]?key|authorization|token|secret|password)$", re.I)
_registered: set[str] = set()


def add_secret(value: str) -> None:
    """Redact ``value`` everywhere from now on (a backend registers the API key it read, whatever the name
    of the variable that held it)."""
    if value and len(value) >= 4:
        _registered.add(value)


def secret_values() -> list[str]:
    """Values of environment variables that look like credentials, and registered secrets: never written."""
    found = [v for k, v in os.environ.items() if len(v) >= 8 and re.search(r"(KEY|TOKEN|SECRET|PASSWORD)", k)]
    return sorted(set(found) | _registered, key=len, reverse=True)


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every secret (registered ones, credential-like environment variables) replaced by ``***``."""
    for s in secret_values() if secrets is None else secrets:
        if s in text:
            text = text.replace(s, "***")
    return text


def redact_bytes(data: bytes) -> bytes:
    """:func:`redact_text` for UTF-8 bytes (JSON lines, files written whole)."""
    for s in secret_values():
        b = s.encode("utf-8")
        if b in data:
            data = data.replace(b, b"***")
    return data


class RedactingStream:
    """A text stream that redacts secrets from everything written to it (the CLI wraps stdout and stderr)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact_text(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, ...
        return getattr(self._stream, name)


