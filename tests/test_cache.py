"""The request cache's storage: every way a batch is written (one statement through SQLite's json_each, or row by
row) stores values that read back as the same results."""

from __future__ import annotations

import hashlib
import math
import sqlite3

import pytest

import luopan.cache as cache_mod
from luopan.cache import RequestCache
from luopan.types import GenerationResult, LoglikelihoodResult


def _key(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest()


LIKELIHOODS = [LoglikelihoodResult(-1.2345678901234567e-05 * (i + 1), i % 2 == 0, i % 7) for i in range(100)] + [
    LoglikelihoodResult(-5e-324, True, 1), LoglikelihoodResult(0.0, True, 0), LoglikelihoodResult(-123456.789)]
GENERATIONS = [GenerationResult(f"答案 {i} \"quoted\" \\ \n\t\x00 é 🧭", 3, i, "stop") for i in range(80)] + [
    GenerationResult("", None, None, None), GenerationResult("x" * 10_000, 1, 2, "length")]


def _stored(path) -> dict[bytes, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT key, value FROM responses").fetchall())


@pytest.mark.parametrize("results", [LIKELIHOODS, GENERATIONS], ids=["likelihood", "generation"])
def test_a_batch_reads_back_the_same_whichever_way_it_was_written(tmp_path, monkeypatch, results):
    keys = [_key(i) for i in range(len(results))]
    bulk = RequestCache(tmp_path / "bulk.sqlite")
    bulk.put_many(zip(keys, results))
    monkeypatch.setattr(cache_mod, "_BULK", False)
    rows = RequestCache(tmp_path / "rows.sqlite")
    rows.put_many(zip(keys, results))
    for c in (bulk, rows):
        got = c.get_many(keys)
        assert [got[k] for k in keys] == results
        assert c.invalid == 0 and len(c) == len(results)
    a, b = _stored(tmp_path / "bulk.sqlite"), _stored(tmp_path / "rows.sqlite")
    assert set(a) == set(b) and all(type(v) is str for v in a.values())


def test_values_json_cannot_carry_are_written_row_by_row(tmp_path):
    """NaN and infinities (orjson would write null) and a lone surrogate (not UTF-8: an API's JSON may carry
    "\ud800") take the row-by-row path, and read back as they were."""
    odd = [LoglikelihoodResult(-math.inf, False, 1)] + LIKELIHOODS
    c = RequestCache(tmp_path / "c.sqlite")
    keys = [_key(i) for i in range(len(odd))]
    c.put_many(zip(keys, odd))
    assert c.get_many(keys)[keys[0]].logprob == -math.inf and len(c) == len(odd)
    for batch in ([GenerationResult("a\ud800b", 1, 2, "stop")] + GENERATIONS, [GenerationResult("\udfff")]):
        more = [_key(1000 + len(c) + i) for i in range(len(batch))]
        c.put_many(zip(more, batch))
        got = c.get_many(more)
        assert [got[k] for k in more] == batch and c.invalid == 0


def test_a_batch_is_one_transaction_on_both_paths(tmp_path, monkeypatch):
    """A batch whose insert fails part-way leaves none of its rows (crash safety does not depend on the path)."""
    c = RequestCache(tmp_path / "c.sqlite")
    keys = [_key(i) for i in range(len(LIKELIHOODS))]
    c.put_many(zip(keys[:10], LIKELIHOODS[:10]))
    with sqlite3.connect(tmp_path / "c.sqlite") as db:  # a trigger that fails on one row of the next batch
        db.execute(f"CREATE TRIGGER stop BEFORE INSERT ON responses WHEN NEW.key = x'{keys[50].hex()}' "
                   "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    for bulk in (True, False):
        monkeypatch.setattr(cache_mod, "_BULK", bulk)
        with pytest.raises(cache_mod.CacheError, match="disk on fire"):
            c.put_many(zip(keys, LIKELIHOODS))
        assert len(c) == 10


def test_a_background_batch_is_seen_by_the_next_lookup_and_by_another_connection(tmp_path):
    path = tmp_path / "c.sqlite"
    c = RequestCache(path)
    results = LIKELIHOODS * 2
    keys = [_key(i) for i in range(len(results))]
    c.put_many(zip(keys[:100], results[:100]), background=True)
    c.put_many(zip(keys[100:], results[100:]), background=True)
    assert c.get_many(keys) == dict(zip(keys, results))  # a lookup waits for the writer first
    assert len(_stored(path)) == len(results)  # committed: another process sees every row
    c.close()


def test_a_failed_background_batch_raises_once_at_flush_and_keeps_the_others(tmp_path, monkeypatch):
    path = tmp_path / "c.sqlite"
    c = RequestCache(path)
    results = LIKELIHOODS * 2  # three batches of at least _BULK_MIN: the background path
    keys = [_key(i) for i in range(len(results))]
    real = RequestCache._insert
    calls = []

    def second_fails(self, rows, packed=None):
        calls.append(1)
        if len(calls) == 2:
            raise cache_mod.CacheError(f"{self.path}: cannot write to the request cache: disk I/O error")
        return real(self, rows, packed)

    monkeypatch.setattr(RequestCache, "_insert", second_fails)
    for part in (slice(0, 68), slice(68, 136), slice(136, None)):
        c.put_many(zip(keys[part], results[part]), background=True)
    with pytest.raises(cache_mod.CacheError, match="c.sqlite: cannot write to the request cache"):
        c.flush()
    c.flush()  # reported once
    assert set(_stored(path)) == set(keys[:68]) | set(keys[136:])  # the batches before and after are kept
    c.close()


def test_a_lookup_finds_what_is_stored_and_only_that_whatever_the_key_length(tmp_path, monkeypatch):
    c = RequestCache(tmp_path / "c.sqlite")
    keys = [_key(i) for i in range(len(LIKELIHOODS))]
    c.put_many(zip(keys[::2], LIKELIHOODS[::2]))  # every other key stored
    wanted = dict(zip(keys[::2], LIKELIHOODS[::2]))
    assert c.get_many(keys) == wanted  # sha256 keys: one statement for all
    monkeypatch.setattr(cache_mod, "_BULK", False)
    short = [k[:16] for k in keys]  # other keys take the IN (...) path
    c.put_many(zip(short[1::2], LIKELIHOODS[1::2]))
    assert c.get_many(short) == dict(zip(short[1::2], LIKELIHOODS[1::2]))
    assert c.invalid == 0
    c.close()
