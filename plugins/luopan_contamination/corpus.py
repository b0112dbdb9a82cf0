"""Reading a corpus as a stream of texts: plain text, JSON lines, Parquet, a ``datasets`` folder, or a folder of
such files. Nothing is read whole into memory: text files go in blocks, records one batch at a time."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from luopan.errors import ConfigError

__all__ = ["check_paths", "corpus_files", "read_corpus", "TEXT_SUFFIXES"]

TEXT_SUFFIXES = (".txt", ".md", ".text")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet",)
ARROW_SUFFIXES = (".arrow",)
_BLOCK = 4 << 20
#: the metadata files of a ``datasets`` folder (``save_to_disk``): not text
_DATASETS_METADATA = {"dataset_info.json", "state.json", "dataset_dict.json"}


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
        if not name.endswith(TEXT_SUFFIXES + JSONL_SUFFIXES):
            return None
    for kind, suffixes in (("text", TEXT_SUFFIXES), ("jsonl", JSONL_SUFFIXES), ("parquet", PARQUET_SUFFIXES),
                           ("arrow", ARROW_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    return None


def check_paths(paths: Sequence[str | Path]) -> list[Path]:
    """The corpus paths, each checked to exist and to be a kind that can be read; one-line errors naming the path."""
    out = []
    if not paths:
        raise ConfigError("--corpus: give at least one corpus file or folder")
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise ConfigError(f"--corpus: {raw}: no such file or folder")
        if p.is_file() and _kind(p) is None:
            raise ConfigError(f"--corpus: {raw}: not a corpus file this check reads (.txt, .md, .jsonl, .json, "
                              f".parquet, .arrow; text and JSON lines may be .gz; or a folder of them)")
        out.append(p)
    return out


def corpus_files(path: Path) -> list[Path]:
    """The readable files of a corpus path: the file itself, or a folder's files (recursively, sorted)."""
    if path.is_file():
        return [path]
    return sorted(f for f in path.rglob("*")
                  if f.is_file() and _kind(f) is not None and f.name not in _DATASETS_METADATA)


def _open_text(path: Path) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _text(path: Path) -> Iterator[str]:
    with _open_text(path) as fh:
        rest = ""
        while True:
            block = fh.read(_BLOCK)
            if not block:
                if rest:
                    yield rest
                return
            block = rest + block
            cut = max(block.rfind(" "), block.rfind("\n"))  # no word cut in two: the rest starts the next block
            if cut <= 0 and len(block) < 4 * _BLOCK:
                rest = block
                continue
            cut = cut if cut > 0 else len(block)
            yield block[:cut]
            rest = block[cut:]


def _jsonl(path: Path, field: str) -> Iterator[str]:
    import orjson

    with _open_text(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise ConfigError(f"--corpus: {path}: line {n} is not JSON") from None
            value = rec.get(field) if isinstance(rec, dict) else None
            if isinstance(value, str):
                yield value


def _table_batches(batches: Iterator[object], field: str, path: Path) -> Iterator[str]:
    for batch in batches:
        names = batch.schema.names  # type: ignore[attr-defined]
        if field not in names:
            raise ConfigError(f"--corpus: {path}: no column '{field}' (columns: {', '.join(names)}); "
                              f"name the text column with --text-field")
        for value in batch.column(names.index(field)).to_pylist():  # type: ignore[attr-defined]
            if isinstance(value, str):
                yield value


def _parquet(path: Path, field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if field not in pf.schema_arrow.names:
        raise ConfigError(f"--corpus: {path}: no column '{field}' (columns: {', '.join(pf.schema_arrow.names)}); "
                          f"name the text column with --text-field")
    yield from _table_batches(pf.iter_batches(batch_size=2048, columns=[field]), field, path)


def _arrow(path: Path, field: str) -> Iterator[str]:
    """An Arrow IPC file or stream (what ``datasets.Dataset.save_to_disk`` writes as ``data-*.arrow``)."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            f = pa.ipc.open_file(source)
            reader = (f.get_batch(i) for i in range(f.num_record_batches))
        yield from _table_batches(iter(reader), field, path)


def read_corpus(paths: Sequence[Path], *, text_field: str = "text") -> Iterator[str]:
    """Every text of the corpus, in order: a text file in blocks (cut at whitespace), a JSON lines file's
    ``text_field`` of each record, a Parquet or Arrow file's ``text_field`` column."""
    for path in paths:
        for f in corpus_files(path):
            kind = _kind(f)
            if kind == "text":
                yield from _text(f)
            elif kind == "jsonl":
                yield from _jsonl(f, text_field)
            elif kind == "parquet":
                yield from _parquet(f, text_field)
            elif kind == "arrow":
                yield from _arrow(f, text_field)
