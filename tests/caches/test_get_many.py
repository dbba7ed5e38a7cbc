"""`get_many`: many keys in one SQLite query, with exactly `get`'s answers and damage handling.

A warm rerun reads every pair's answer from the cache; one query per key cost a third of
its time. `DiskCache.get_many(keys)` runs one query per chunk of keys, and must still read
every entry `get` reads (JSON values stored inline and as files), miss what `get` misses,
and treat an unreadable entry as `get` does: a miss, counted once and logged.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import diskcache
import pytest

from opro.caches import disk
from opro.caches.disk import DiskCache
from opro.caches.memory import MemoryCache
from opro.providers.types import Completion, Usage


def completion(i: int) -> Completion:
    return Completion((f"answer {i}",), Usage(10 + i, i), ("stop",))


def test_get_many_answers_as_get_does_in_one_query_per_chunk(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    for i in range(0, 1200, 2):
        cache.set(f"k{i}", completion(i))
    big = Completion(("x" * 50_000,), Usage(3, 12_500), ("length",))  # stored as a file
    cache.set("big", big)
    cache.flush()  # on disk, so that the reads below are SQLite's
    keys = [f"k{i}" for i in range(1200)] + ["big", "k4", "k4", "k5"]  # repeats too
    statements: list[str] = []
    cache._cache._con.set_trace_callback(statements.append)
    found = cache.get_many(keys)
    cache._cache._con.set_trace_callback(None)
    assert len(statements) == 3  # 1,201 distinct keys, 500 per query
    assert found == [cache.get(k) for k in keys]
    assert found[1200] == big and found[4] == completion(4) and found[5] is None
    assert sum(f is not None for f in found) == 600 + 1 + 2
    assert cache.stats.unreadable == 0
    cache.close()


def test_an_unreadable_entry_in_a_batch_is_a_miss_counted_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = DiskCache(tmp_path)
    for i in range(10):
        cache.set(f"k{i}", completion(i))
    cache.close()
    with diskcache.Cache(str(tmp_path)) as raw:
        raw.set("k3", b"{not json")
        raw.set("k7", {"texts": ["pickled"]})  # a pickle: refused unread
    cache = DiskCache(tmp_path)
    keys = [f"k{i}" for i in range(10)]
    with caplog.at_level(logging.WARNING, logger="opro.cache"):
        found = cache.get_many(keys)
    assert [i for i, f in enumerate(found) if f is None] == [3, 7]
    assert found[0] == completion(0) and found[9] == completion(9)
    assert cache.stats.unreadable == 2
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    assert cache.get_many(keys) == found  # known unreadable: not read or counted again
    assert cache.stats.unreadable == 2
    cache.close()


def test_a_failing_query_falls_back_to_get_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DiskCache(tmp_path)
    for i in range(5):
        cache.set(f"k{i}", completion(i))
    monkeypatch.setattr(disk, "_SELECT_MANY", "SELECT no_such_column FROM Cache {marks}")
    found = cache.get_many([f"k{i}" for i in range(6)])
    assert found == [completion(i) for i in range(5)] + [None]
    cache.close()


def test_results_kept_in_memory_are_found_by_get_many(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DiskCache(tmp_path)

    def disk_full(key: str, value: bytes) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(cache._cache, "set", disk_full)
    cache.set("k", completion(1))  # the write fails: kept in memory
    cache.flush()
    assert cache.stats.write_errors == 1
    assert cache.get_many(["k", "other"]) == [completion(1), None]
    cache.close()


def test_memory_cache_get_many() -> None:
    cache = MemoryCache()
    cache.set("a", completion(1))
    assert cache.get_many(["a", "b", "a"]) == [completion(1), None, completion(1)]
