"""structlog JSON lines in ``run.log``, with secrets redacted before anything is written."""

from __future__ import annotations

import logging as _stdlib_logging
from pathlib import Path
from typing import Any

import structlog

from luopan.secrets import SECRET_KEYS, redact_text, secret_values

_open_files: list[Any] = []


def redact(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    secrets = secret_values()
    for k, v in list(event.items()):
        if SECRET_KEYS.search(str(k)) and not str(k).endswith("_tokens"):
            event[k] = "***"
        elif isinstance(v, str) and secrets:
            event[k] = redact_text(v, secrets)
    return event


def _echo(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """``--debug``: every event also as a readable line on stderr (a traceback in full, after it)."""
    import sys

    fields = {k: v for k, v in event.items() if k not in ("event", "level", "timestamp", "traceback", "exception")}
    extra = " ".join(f"{k}={v}" for k, v in fields.items())
    print(f"{event.get('timestamp', '')[11:23]} {event.get('level', ''):<7} {event.get('event', '')} {extra}".rstrip(),
          file=sys.stderr)
    for key in ("traceback", "exception"):
        if event.get(key):
            print(event[key], file=sys.stderr)
    return event


def configure_run_log(path: Path, *, echo: bool = False) -> Any:
    """Send luopan's structured log to ``path`` (JSON lines, appended) until :func:`close_run_log` is called with
    what this returns (the logging set-up before it, restored then: a run leaves no logging state behind)."""
    previous = structlog.get_config()
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
            *([_echo] if echo else []),
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_stdlib_logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=fh),
        cache_logger_on_first_use=False,
    )
    return previous


def close_run_log(previous: Any) -> None:
    """Close the run's log file and restore the logging set-up :func:`configure_run_log` found."""
    for fh in _open_files:
        fh.close()
    _open_files.clear()
    structlog.configure(**previous)
