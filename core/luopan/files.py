"""Files luopan writes: safe names, atomic writes with secrets redacted, and one-line errors when the disk fails.

Every text luopan writes into an output folder goes through :func:`atomic_write`: secrets are redacted
(:func:`luopan.secrets.redact_text`), the file is written next to its target and renamed over it (a crash leaves
the old file or the new one, never half of one), a failure removes the temporary file and becomes an
:class:`OutputError` naming the file and the cause (a full disk, a read-only folder), never a traceback.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from luopan.errors import LuopanError
from luopan.secrets import redact_bytes, redact_text

#: the longest name (in UTF-8 bytes) of a folder or file luopan makes from a user's name; file systems allow 255
MAX_NAME_BYTES = 200


class OutputError(LuopanError):
    """An output file or folder cannot be written: the message names it and says what to do."""

    exit_code = 2


def safe_name(name: str) -> str:
    """``name`` as one file-name component: letters, digits, ``-_.`` kept, anything else ``_``."""
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return "_" + out if out in ("", ".", "..") else out


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a folder name of its own (``run.name``), or None when it can."""
    if not name or not name.strip():
        return "is empty"
    if "\x00" in name:
        return "contains a NUL byte"
    if "/" in name or "\\" in name or name in (".", ".."):
        return "must be a plain folder name (no '/', '\\', '.' or '..'): the run goes in output_dir/NAME"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def describe_os_error(exc: OSError) -> str:
    """The cause of a write failure, with what to do about it."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full; free some space and rerun the same command (finished work is kept)"
    if exc.errno == errno.EROFS:
        return "the file system is read-only; choose another folder (--output-dir)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied; choose a folder you may write to (--output-dir)"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is a file, not a folder"
    if exc.errno == errno.EISDIR:
        return "it is a folder, not a file"
    if exc.errno == errno.ENAMETOOLONG:
        return "the name is too long"
    return exc.strerror or str(exc)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` (secrets redacted) via a temporary file and a rename."""
    payload = redact_text(data).encode("utf-8") if isinstance(data, str) else redact_bytes(data)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise OutputError(f"{path}: cannot write: {describe_os_error(exc)}") from None


def ensure_dir(path: Path, what: str) -> None:
    """Create folder ``path`` (and its parents) and check it is writable; one line naming it otherwise."""
    try:
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path}: {what} is a file, not a folder; choose a folder (--output-dir)")
        path.mkdir(parents=True, exist_ok=True)
    except OutputError:
        raise
    except ValueError as exc:  # an embedded NUL byte
        raise OutputError(f"{str(path)!r}: not a usable folder name: {exc}") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot create the {what}: {describe_os_error(exc)}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: the {what} is not writable; choose a folder you may write to (--output-dir)")
