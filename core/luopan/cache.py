"""The request cache: content-addressed, crash-safe, shared by every run that uses the same folder.

key = sha256(backend identity + full request payload: prompt or messages, continuation, generation
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

SCHEMA_VERSION = 1


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def request_key(identity_json: str, payload: dict[str, Any]) -> str:
    h = hashlib.sha256(identity_json.encode())
    h.update(b"\x00")
    h.update(canonical_json(payload).encode())
    return h.hexdigest()


class RequestCache:
    """Maps request keys to result dicts. ``path=None`` keeps nothing (caching disabled)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            self._db = db

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        if self._db is None or not keys:
            return {}
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 900):  # SQLite's bound-parameter limit
            chunk = unique[i : i + 900]
            marks = ",".join("?" * len(chunk))
            for k, v in self._db.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk):
                found[k] = json.loads(v)
        return found

    def put_many(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        if self._db is None:
            return
        rows = [(k, json.dumps(v, ensure_ascii=False)) for k, v in items]
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
