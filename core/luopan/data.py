"""Finding local data files: dataset plugins call :func:`find_data` with the path a preset or run names.

Search order: the path itself (absolute, or relative to the working directory), relative to the run file's
folder, then each folder of ``LUOPAN_DATA`` (``os.pathsep``-separated). Nothing is downloaded here.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from luopan.errors import ConfigError

_run_dir: Path | None = None


def set_run_dir(path: Path | None) -> None:
    global _run_dir
    _run_dir = path


def search_dirs() -> list[Path]:
    dirs = [Path.cwd()]
    if _run_dir is not None:
        dirs.append(_run_dir)
    dirs += [Path(p) for p in os.environ.get("LUOPAN_DATA", "").split(os.pathsep) if p]
    return list(dict.fromkeys(dirs))


def find_data(path: str | Path, *, what: str = "data") -> Path:
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute():
        if p.exists():
            return p
        raise ConfigError(f"{what}: '{p}' does not exist")
    tried = []
    for d in search_dirs():
        cand = d / p
        tried.append(str(d))
        if cand.exists():
            return cand
    raise ConfigError(
        f"{what}: '{path}' not found (searched {', '.join(tried)}); set LUOPAN_DATA to the folder that holds it"
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
