"""Where the rows of a split come from: local files, a ``save_to_disk`` folder, or the Hugging Face hub.

Rows are plain dicts, one per record, in file order. jsonl, json, csv and tsv are read with the standard
library (and orjson), parquet with pyarrow, ``save_to_disk`` folders and hub datasets with the ``datasets``
library; the optional libraries are imported only when such a source is read.

Every error is a :class:`FilesDataError` whose one line names the file and the row (0-based, counting data
rows only) and, for text formats, the line.
"""

from __future__ import annotations

import csv
import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from luopan.data import csv_records, read_jsonl
from luopan.deps import require
from luopan.errors import ConfigError

FORMATS = ("jsonl", "json", "csv", "tsv", "parquet")
_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
}
# "test.jsonl" -> test; "test-00000-of-00002.parquet" (the hub's shard names) -> test
SPLIT_FILE = re.compile(r"^(?P<split>.+?)(?:-\d+-of-\d+)?\.(?:jsonl|ndjson|json|csv|tsv|parquet)$")
COMPONENT = "dataset 'files'"


class FilesDataError(ConfigError):
    """A data file or a row cannot be read or mapped. One line naming the file, the row and the field."""


@dataclass
class SplitRows:
    """The rows of one split and where each came from (for error messages and the fingerprint)."""

    name: str
    rows: list[dict[str, Any]]
    #: (first row index, source) per file, in order; a source is a file path or a description
    sources: list[tuple[int, str]]
    #: local files read (fingerprint)
    files: list[Path] = field(default_factory=list)

    def where(self, index: int) -> str:
        """``file: row N`` for the row at ``index`` (N counts from 0 inside that file)."""
        start, source = self.sources[0]
        for s, src in self.sources:
            if s > index:
                break
            start, source = s, src
        return f"{source}: row {index - start}"


# ---------------------------------------------------------------- sources


class Source:
    """The splits a dataset offers and how to read one."""

    def splits(self) -> list[str]:
        raise NotImplementedError

    def read(self, split: str) -> SplitRows:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {}


class FileSource(Source):
    """Local files: one split per file name (``test.jsonl``, ``train-00000-of-00001.parquet``, ...)."""

    def __init__(self, files: dict[str, list[Path]], fmt: str = "auto") -> None:
        self.files = files
        self.fmt = fmt

    def splits(self) -> list[str]:
        return list(self.files)

    def read(self, split: str) -> SplitRows:
        rows: list[dict[str, Any]] = []
        sources: list[tuple[int, str]] = []
        for path in self.files[split]:
            sources.append((len(rows), str(path)))
            rows.extend(read_file(path, self.fmt))
        return SplitRows(split, rows, sources, list(self.files[split]))

    def describe(self) -> dict[str, Any]:
        return {"files": {s: [str(p) for p in ps] for s, ps in self.files.items()}, "format": self.fmt}


class DiskSource(Source):
    """A folder written by ``datasets``' ``save_to_disk`` (a DatasetDict, or one Dataset: the eval split)."""

    def __init__(self, root: Path, single_split: str) -> None:
        self.root = root
        self.single_split = single_split
        if (root / "dataset_dict.json").is_file():
            info = orjson.loads((root / "dataset_dict.json").read_bytes())
            self._splits = list(info.get("splits", []))
        else:
            self._splits = [single_split]

    def splits(self) -> list[str]:
        return list(self._splits)

    def read(self, split: str) -> SplitRows:
        datasets = require("datasets", extra="datasets", component=COMPONENT)
        folder = self.root / split if (self.root / "dataset_dict.json").is_file() else self.root
        try:
            ds = datasets.load_from_disk(str(folder))
        except Exception as exc:  # the library's own errors: corrupt or foreign folders
            raise FilesDataError(f"{folder}: cannot load_from_disk ({type(exc).__name__}: {exc})") from None
        files = sorted(p for p in folder.iterdir() if p.is_file())
        return SplitRows(split, ds.to_list(), [(0, str(folder))], files)

    def describe(self) -> dict[str, Any]:
        return {"load_from_disk": str(self.root)}


class HubSource(Source):
    """A dataset on the Hugging Face hub, read with ``datasets.load_dataset`` (needs the network)."""

    def __init__(self, hub: str, config: str | None, revision: str | None) -> None:
        if _offline():
            raise ConfigError(
                f"files: hub '{hub}' needs the network, and HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set; "
                f"save the dataset with save_to_disk and give its folder as 'path'"
            )
        self.hub, self.config, self.revision = hub, config, revision
        self._fingerprints: dict[str, str] = {}

    def splits(self) -> list[str]:
        datasets = require("datasets", extra="datasets", component=COMPONENT)
        try:
            return list(datasets.get_dataset_split_names(self.hub, self.config, revision=self.revision))
        except Exception as exc:
            raise FilesDataError(
                f"hub '{self.hub}': cannot list splits ({type(exc).__name__}: {exc})"
            ) from None

    def read(self, split: str) -> SplitRows:
        datasets = require("datasets", extra="datasets", component=COMPONENT)
        try:
            ds = datasets.load_dataset(self.hub, self.config, split=split, revision=self.revision)
        except Exception as exc:
            raise FilesDataError(f"hub '{self.hub}' split '{split}': {type(exc).__name__}: {exc}") from None
        self._fingerprints[split] = str(getattr(ds, "_fingerprint", ""))
        label = f"hub {self.hub}" + (f" ({self.config})" if self.config else "") + f" [{split}]"
        return SplitRows(split, ds.to_list(), [(0, label)])

    def fingerprint_parts(self) -> list[str]:
        return [f"{s}:{f}" for s, f in sorted(self._fingerprints.items())]

    def describe(self) -> dict[str, Any]:
        return {"hub": self.hub, "hub_config": self.config, "hub_revision": self.revision}


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def is_saved_dataset(folder: Path) -> bool:
    """A ``save_to_disk`` folder: a DatasetDict (dataset_dict.json) or a Dataset (state.json)."""
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()
    )


def discover_splits(folder: Path) -> dict[str, list[Path]]:
    """Split name -> its files, from the data files directly in ``folder`` (else in ``folder/data``)."""
    for d in (folder, folder / "data"):
        if not d.is_dir():
            continue
        found: dict[str, list[Path]] = {}
        for name in sorted(os.listdir(d)):
            m = SPLIT_FILE.match(name)
            if m and (d / name).is_file():
                found.setdefault(m["split"], []).append(d / name)
        if found:
            return found
    return {}


def check_one_format(found: dict[str, list[Path]]) -> None:
    """``test.jsonl`` beside ``test.csv``: the same split twice? The user says which with ``files``."""
    for split, files in found.items():
        if len({f.suffix.lower() for f in files}) > 1:
            names = ", ".join(f.name for f in files)
            raise ConfigError(
                f"files: split '{split}' has files of several formats in {files[0].parent} ({names}); "
                f"name the ones to read with 'files'"
            )


def expand(pattern: str, base: Path | None) -> list[Path]:
    """The files a ``files:`` entry names: a path or a glob, relative to ``base`` (or found with find_data)."""
    from luopan.data import find_data

    p = Path(os.path.expanduser(pattern))
    if glob.has_magic(pattern):
        root = str(p if p.is_absolute() or base is None else base / p)
        hits = sorted(Path(h) for h in glob.glob(root, recursive=True) if Path(h).is_file())
        if not hits:
            raise ConfigError(f"files: no file matches '{pattern}'" + (f" in {base}" if base else ""))
        return hits
    if base is not None and not p.is_absolute():
        cand = base / p
        if not cand.exists():
            raise ConfigError(f"files: '{cand}' does not exist")
        return [cand]
    return [find_data(pattern, what="files")]


# ---------------------------------------------------------------- file formats


def file_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(
            f"files: {path}: unknown file type '{path.suffix}'; set 'format' ({', '.join(FORMATS)})"
        )
    return kind


def read_file(path: Path, fmt: str = "auto") -> list[dict[str, Any]]:
    """Every record of one file, as dicts, in file order."""
    kind = file_format(path, fmt)
    try:
        if kind == "jsonl":
            return list(read_jsonl(path, error=FilesDataError))
        if kind == "json":
            return _read_json(path)
        if kind in ("csv", "tsv"):
            return _read_csv(path, "\t" if kind == "tsv" else ",")
        return _read_parquet(path)
    except UnicodeDecodeError as exc:
        raise FilesDataError(f"{path}: not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise FilesDataError(f"{path}: cannot read ({exc})") from None


def _read_json(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise FilesDataError(f"{path}: invalid JSON ({exc})") from None
    if isinstance(doc, dict):  # {"data": [...]}: the one list of records it holds
        lists = [k for k, v in doc.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise FilesDataError(
                f"{path}: expected a list of records, or an object holding exactly one list "
                f"(found lists under: {', '.join(lists) or 'none'})"
            )
        doc = doc[lists[0]]
    if not isinstance(doc, list):
        raise FilesDataError(f"{path}: expected a list of records, got {type(doc).__name__}")
    for i, row in enumerate(doc):
        if type(row) is not dict:
            raise FilesDataError(f"{path}: row {i}: expected a JSON object, got {type(row).__name__}")
    return doc


def _read_csv(path: Path, delimiter: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, None)
        if not header:
            raise FilesDataError(f"{path}: empty file, expected a header row")
        if len(set(header)) != len(header):
            dup = sorted({h for h in header if header.count(h) > 1})
            raise FilesDataError(
                f"{path}: line 1: duplicate column(s) {', '.join(map(repr, dup))} in the header"
            )
        rows = [dict(zip(header, row)) for _, _, row in csv_records(path, reader, header, FilesDataError)]
    return rows


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    pq = require("pyarrow.parquet", extra="datasets", component=COMPONENT)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow's ArrowInvalid and friends
        raise FilesDataError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from None
    return table.to_pylist()
