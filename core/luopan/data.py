"""Finding local data files: dataset plugins call :func:`find_data` with the path a preset or run names.

Search order: the path itself (absolute), then the folders of the run being planned or executed: the working
directory, the run file's folder, ``run.data`` and ``LUOPAN_DATA`` (``os.pathsep``-separated), as the run read
them when it was made. The folders belong to the run (:func:`data_scope`, a context variable set while the run
plans and executes), not to the process: two runs with different data folders in one process do not interfere.
Outside a run the working directory and ``LUOPAN_DATA`` are searched. Nothing is downloaded here.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from luopan.errors import ConfigError

__all__ = ["find_data", "files_fingerprint", "csv_records", "read_jsonl", "data_scope", "search_dirs", "run_folders"]

_scope: ContextVar[tuple[Path, ...] | None] = ContextVar("luopan_data_dirs", default=None)


@contextmanager
def data_scope(dirs: Sequence[Path]) -> Iterator[None]:
    """Within the block, :func:`find_data` searches ``dirs`` (a run's folders)."""
    token = _scope.set(tuple(dirs))
    try:
        yield
    finally:
        _scope.reset(token)


def run_folders(config: Any) -> list[Path]:
    """Where a run's datasets look for their files: the working folder, the run file's folder, ``run.data``
    (relative to the run file) and ``$LUOPAN_DATA`` (``os.pathsep``-separated), as they are now."""
    base = Path(config.base_dir)
    dirs = [Path.cwd(), base]
    dirs += [p if p.is_absolute() else base / p for p in map(Path, config.run.data)]
    dirs += [Path(p) for p in os.environ.get("LUOPAN_DATA", "").split(os.pathsep) if p]
    return list(dict.fromkeys(dirs))


def search_dirs() -> list[Path]:
    scoped = _scope.get()
    if scoped is not None:
        return list(scoped)
    dirs = [Path.cwd()] + [Path(p) for p in os.environ.get("LUOPAN_DATA", "").split(os.pathsep) if p]
    return list(dict.fromkeys(dirs))


def find_data(path: str | Path, *, what: str = "data") -> Path:
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute():
        if p.exists():
            return p
        raise ConfigError(f"{what}: '{p}' does not exist")
    dirs = search_dirs()
    for d in dirs:
        cand = d / p
        if cand.exists():
            return cand
    env = [Path(x) for x in os.environ.get("LUOPAN_DATA", "").split(os.pathsep) if x]
    tried = ", ".join(f"{d} (LUOPAN_DATA)" if d in env else str(d) for d in dirs) or "no folder"
    if not env:
        raise ConfigError(
            f"{what}: '{path}' not found (searched {tried}; LUOPAN_DATA is not set): set LUOPAN_DATA to the folder "
            f"that holds the benchmark data (export LUOPAN_DATA=/path/to/datasets)"
        )
    raise ConfigError(
        f"{what}: '{path}' not found (searched {tried}): put it in LUOPAN_DATA or set LUOPAN_DATA to the folder "
        f"that holds it"
    )


def files_fingerprint(files: Iterable[Path]) -> str:
    """sha256 over the names and bytes of ``files`` (provenance: which data exactly was read)."""
    h = hashlib.sha256()
    for f in sorted(files):
        name = f"{f.parent.name}/{f.name}".encode()  # dev/x.csv and test/x.csv must hash apart
        data = f.read_bytes()
        for part in (name, data):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()


def csv_records(path: Path, reader: Any, header: list[str],
                error: type[Exception]) -> Iterator[tuple[int, int, list[str]]]:
    """The data rows of a ``csv.reader`` whose header was read: ``(row index, first line, row)``.

    Blank lines are skipped. A row whose width differs from the header's, or a CSV syntax error, raises
    ``error`` naming the file, the row (0-based, counting data rows) and its first line.
    """
    width = len(header)
    index = 0
    line = reader.line_num
    try:
        for row in reader:
            start, line = line + 1, reader.line_num
            if not row:
                continue
            if len(row) != width:
                what = (
                    f"missing column {', '.join(repr(c) for c in header[len(row) :])}"
                    if len(row) < width
                    else f"{len(row) - width} field(s) more than the header's {width}"
                )
                raise error(f"{path}: row {index} (line {start}): {what}")
            yield index, start, row
            index += 1
    except csv.Error as exc:
        raise error(f"{path}: row {index} (line {reader.line_num}): {exc}") from None


def read_jsonl(path: str | Path, *, what: str = "", error: type[Exception] = ConfigError) -> Iterator[dict[str, Any]]:
    """The records of a JSON Lines file: one JSON object per line, in file order; blank lines are skipped.

    Lines are split at ``\\n`` only (a JSON string may hold U+2028, which ``str.splitlines`` would split at) and a
    UTF-8 byte order mark is ignored. A line that is not valid JSON or not a JSON object, or a file that cannot
    be read, raises ``error`` (a :class:`ConfigError` unless the caller names a subclass) with one line naming
    the file, the record (0-based, counting records) and the line number: ``data.jsonl: row 3 (line 5): invalid
    JSON (...)``, prefixed by ``what`` (``"votes"``) when given.
    """
    import orjson

    head = f"{what}: {path}" if what else f"{path}"
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise error(f"{head}: cannot read ({exc.strerror or exc})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    index = 0
    for line_no, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise error(f"{head}: row {index} (line {line_no}): invalid JSON ({exc})") from None
        if type(record) is not dict:
            raise error(
                f"{head}: row {index} (line {line_no}): expected a JSON object, got {type(record).__name__}"
            )
        yield record
        index += 1
