"""The ``bench`` loader: the ``files`` loader on a reader for a layout it cannot map alone (``sources``).

Every option of ``files`` applies (templates, choices, few-shot, circular, ...); ``reader`` names how the
folder at ``path`` becomes rows.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from luopan.data import find_data
from luopan.errors import ConfigError, LuopanError
from luopan_bench.sources import READERS
from luopan_generic.dataset import FilesDataset, FilesParams, source_problems
from luopan_generic.readers import Source


class BenchParams(FilesParams):
    reader: Literal["hellaswag", "piqa", "truthfulqa", "bbh"] = Field(
        description="how the data at 'path' becomes rows: hellaswag (llama.cpp text form), piqa (jsonl + "
        "labels file), truthfulqa (the original CSV, as MC1/MC2 targets), bbh (task files + CoT prompts)"
    )


def open_source(reader: str, p: FilesParams) -> tuple[Source, str]:
    """The reader's source over the data at ``p.path``, and the subset's name."""
    if p.path is None or p.hub is not None or p.files:
        raise ConfigError(f"bench: reader '{reader}' reads a local 'path' (no 'hub' or 'files')")
    root = find_data(p.path, what="bench path")
    return READERS[reader](root), p.subset or (root.name if root.is_dir() else root.parent.name)


class BenchDataset(FilesDataset):
    def __init__(self, reader: str, **params: Any) -> None:
        self.reader = reader
        super().__init__(**params)

    def _open(self, p: FilesParams) -> tuple[Source, str]:  # type: ignore[override]
        return open_source(self.reader, p)

    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        """The data folder (found like any data path) and the files its reader needs; nothing is read."""
        try:
            source, _ = open_source(params.reader, params)
        except LuopanError as exc:
            return [str(exc)]
        return source_problems(source, params.split, params.path)

    def describe(self) -> dict[str, Any]:
        return {"reader": self.reader, **super().describe()}
