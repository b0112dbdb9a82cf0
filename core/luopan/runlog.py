"""structlog JSON lines in ``run.log``, with secrets redacted before anything is written."""

from __future__ import annotations

import logging as _stdlib_logging
import os
import re
from pathlib import Path
from typing import Any

import structlog

SECRET_KEYS = re.compile(r"(api[_-]?key|authorization|token|secret|password)$", re.I)
_open_files: list[Any] = []
_registered: set[str] = set()


def add_secret(value: str) -> None:
    """Redact ``value`` everywhere from now on (a backend registers the API key it read, whatever the name
    of the variable that held it)."""
    if value and len(value) >= 4:
        _registered.add(value)


def _secret_values() -> list[str]:
    """Values of environment variables that look like credentials, and registered secrets: never written."""
    found = [v for k, v in os.environ.items() if len(v) >= 8 and re.search(r"(KEY|TOKEN|SECRET|PASSWORD)", k)]
    return sorted(set(found) | _registered, key=len, reverse=True)


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with the value of every credential-like environment variable replaced by ``***``."""
    for s in _secret_values() if secrets is None else secrets:
        text = text.replace(s, "***")
    return text


def redact(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    secrets = _secret_values()
    for k, v in list(event.items()):
        if SECRET_KEYS.search(str(k)) and not str(k).endswith("_tokens"):
            event[k] = "***"
        elif isinstance(v, str) and secrets:
            event[k] = redact_text(v, secrets)
    return event


def configure_run_log(path: Path) -> None:
    """Send luopan's structured log to ``path`` (JSON lines, appended)."""
    for fh in _open_files:
        fh.close()
    _open_files.clear()
    fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
    _open_files.append(fh)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,  # after exc_info is rendered: tracebacks are redacted too
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_stdlib_logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=fh),
        cache_logger_on_first_use=False,
    )
