"""The request cache: content-addressed, crash-safe, shared by every run that uses the same folder.

key = sha256(backend identity, then the request's key parts: prompt or messages, continuation, generation
parameters). Resume is "rerun the same command": answered requests are found by content, so a changed
prompt template or decoding parameter misses exactly the requests it changes, and nothing stale is reused.
Storage is SQLite in WAL mode: every batch is one transaction, so a kill -9 at any moment leaves either the
whole batch or none of it, never a torn record.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from luopan.types import LoglikelihoodRequest, Request, Result, result_from_json

SCHEMA_VERSION = 2


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _feed(h: Any, part: str) -> None:
    b = part.encode()
    h.update(len(b).to_bytes(8, "little"))  # length-prefixed: no two part lists hash alike
    h.update(b)


def request_keys(identity_json: str, requests: Sequence[Request]) -> list[bytes]:
    """The cache key of each request. Consecutive requests sharing their leading parts (the options of one
    question share its context) hash those parts once."""
    base = hashlib.sha256()
    _feed(base, identity_json)
    keys: list[bytes] = []
    append = keys.append
    last_head: Any = None
    head_hash = base
    for r in requests:
        if type(r) is LoglikelihoodRequest:  # the hot path: tens of thousands per run
            head: Any = r.context
            tail = r.continuation
            if head != last_head:
                head_hash = base.copy()
                _feed(head_hash, "loglikelihood")
                _feed(head_hash, head)
                last_head = head
        else:
            parts = r.key_parts()
            head, tail = parts[:-1], parts[-1]
            if head != last_head:
                head_hash = base.copy()
                for p in head:
                    _feed(head_hash, p)
                last_head = head
        h = head_hash.copy()
        b = tail.encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
        append(h.digest())
    return keys


class RequestCache:
    """Maps request keys to results. ``path=None`` keeps nothing (caching disabled)."""

    def __init__(self, path: str | Path | None, *, readonly: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self._db: sqlite3.Connection | None = None
        if self.path is not None and readonly:  # a dry run: look up, create and write nothing
            if self.path.exists():
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
            return
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA cache_size=-131072")  # 128 MiB of page cache: lookups are random-access
            db.execute("PRAGMA mmap_size=1073741824")
            db.execute("CREATE TABLE IF NOT EXISTS responses (key BLOB PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            self._db = db

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, Result]:
        if self._db is None or not keys:
            return {}
        found: dict[bytes, Result] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 900):  # SQLite's bound-parameter limit
            chunk = unique[i : i + 900]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk).fetchall()
            found.update(zip([k for k, _ in rows], map(result_from_json, [v for _, v in rows])))
        return found

    def put_many(self, items: Iterable[tuple[bytes, Result]]) -> None:
        if self._db is None:
            return
        rows = sorted((k, v.to_json()) for k, v in items)  # key order: fewer B-tree page splits
        if not rows:
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def __len__(self) -> int:
        if self._db is None:
            return 0
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
