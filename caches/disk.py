"""The persistent result cache: diskcache (SQLite + files) holding JSON records.

diskcache is process-safe (SQLite in WAL mode), so two runs can share one directory. Writes
go through a write-behind queue (`caches.writer`): `set` returns at once, the result is
readable by this process immediately (from the queue's pending map), and one worker thread
stores queued results in batches, one transaction each, so the event loop never waits for
SQLite; `flush` (or `close`) waits for them, and a killed process loses only results still
queued, never half a value. Reads stay on the caller's thread: a warm read is a few
microseconds, and WAL readers never wait for writers. SQLite waits at most `lock_timeout`
(not diskcache's 60 s) for another process's write lock, and a batch that cannot get it
is retried a few times and then kept in memory. Records are orjson bytes, never
pickles, so a cache written by one version of the code can be read, inspected or migrated
by another; a pickled value found in the directory is refused unread (unpickling runs code).
Eviction is off: evicting paid-for answers would silently re-pay them.

Damage is survived where it can be and reported where it cannot:

* a database that cannot be opened (a flipped header, a file that is not SQLite) is a
  `CacheError` naming the directory and what to do; nothing has been paid for yet;
* an entry that cannot be read (a damaged page, a truncated or foreign value) is a miss,
  logged on the `opro.cache` logger and counted in `stats.unreadable`; paying for it again
  is the price of the damage, and the fresh answer is written back;
* a write that fails mid-run (disk full, a damaged page, a lock held too long) keeps the
  result in memory for the rest of the process, so nothing this run paid for is lost or
  re-paid; it is logged and counted in `stats.write_errors`. After the first SQLite error
  every result is kept in memory too, since a damaged database may accept a write that it
  cannot read back.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import diskcache
import platformdirs

from opro.caches.base import CacheStats, UnreadableEntry, decode, encode
from opro.caches.writer import Batch, WriteBehind
from opro.errors import OproError, SettingsError
from opro.providers.types import Completion

log = logging.getLogger("opro.cache")

# Failures of the storage layer that damage, a full disk or a lock can cause.
_STORAGE_ERRORS = (sqlite3.Error, diskcache.Timeout, OSError)
# Seconds SQLite waits for another process's write lock before a statement gives up
# (diskcache's default, 60 s, would hold a run up while another process writes).
LOCK_TIMEOUT_S = 1.0
# Tries of a batch that finds the database locked; after that its results stay in memory.
LOCK_ATTEMPTS = 3

# `get_many`: diskcache's `get` query for many keys at once (string keys are stored raw).
# SQLite allows 999 parameters per statement in its oldest supported builds.
_KEYS_PER_QUERY = 500
_MODE_RAW = diskcache.core.MODE_RAW
_SELECT_MANY = (
    "SELECT key, mode, filename, value FROM Cache WHERE key IN ({marks}) AND raw = 1"
    " AND (expire_time IS NULL OR expire_time > ?)"
)


def default_cache_dir() -> Path:
    """`$OPRO_CACHE_DIR`, else the platform's user cache directory."""
    env = os.environ.get("OPRO_CACHE_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_cache_dir("opro-engine")) / "results"


class CacheError(OproError, OSError):
    """The cache directory cannot be opened or its database cannot be read."""


class _JsonDisk(diskcache.Disk):  # type: ignore[misc]  # diskcache is untyped
    """diskcache's storage, minus unpickling: this cache only ever stores JSON bytes."""

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == diskcache.core.MODE_PICKLE:
            raise UnreadableEntry("a pickled value, which this cache never writes")
        return super().fetch(mode, filename, value, read)


def _advice(directory: Path) -> str:
    return (
        f"move it aside (mv {directory} {directory}.broken) to start a fresh cache, "
        "or run with --no-cache"
    )


class DiskCache:
    """Request key -> completion, stored as JSON in a diskcache directory."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        lock_timeout: float = LOCK_TIMEOUT_S,
    ) -> None:
        if not (isinstance(lock_timeout, int | float) and 0 < lock_timeout <= 600):
            raise SettingsError(f"lock timeout must be in (0, 600] seconds, got {lock_timeout!r}")
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.stats = CacheStats()
        # Results whose write failed: served from here for the rest of the process.
        self._kept: dict[str, Completion] = {}
        # Keys found unreadable: misses until rewritten, counted and logged once each.
        self._unreadable: set[str] = set()
        # Set by the first SQLite error: a damaged database may accept a write it cannot
        # read back, so from then on every result is also kept in memory.
        self._degraded = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._cache = diskcache.Cache(
                str(self.directory),
                size_limit=2**62,
                eviction_policy="none",
                cull_limit=0,
                disk=_JsonDisk,
                timeout=lock_timeout,
            )
        except (sqlite3.OperationalError, OSError, diskcache.Timeout) as exc:
            raise CacheError(f"cannot open cache directory {self.directory}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
            raise CacheError(self._damaged(exc)) from exc
        try:
            self._cache.get("opro-probe")  # walks the key index: a broken root shows here
        except sqlite3.DatabaseError as exc:
            self._cache.close()
            raise CacheError(self._damaged(exc)) from exc
        # The writer thread closes its own SQLite connection (connections are per thread).
        self._writes = WriteBehind(self._store, on_thread_exit=self._cache.close)
        self._pending = self._writes.pending
        log.debug("cache %s: open (lock timeout %g s)", self.directory, lock_timeout)

    def _damaged(self, exc: BaseException) -> str:
        return (
            f"the result cache in {self.directory} is damaged and cannot be read ({exc}): "
            + _advice(self.directory)
        )

    # A batched read (`get_many`) belongs beside `get` and must consult `_pending` and
    # `_kept` first in the same way.
    def get(self, key: str) -> Completion | None:
        pending = self._pending.get(key)  # stored by this process, not yet on disk
        if pending is not None:
            return pending
        kept = self._kept.get(key)
        if kept is not None:
            return kept
        if key in self._unreadable:
            return None
        try:
            blob = self._cache.get(key)
            return None if blob is None else decode(blob)
        except (UnreadableEntry, *_STORAGE_ERRORS) as exc:
            self._degraded |= isinstance(exc, sqlite3.DatabaseError)
            self._unreadable.add(key)
            self.stats.unreadable += 1
            level = logging.WARNING if self.stats.unreadable == 1 else logging.DEBUG
            log.log(
                level,
                "cache %s: entry %s... is unreadable (%s), so it counts as a miss; "
                "if this repeats, %s",
                self.directory,
                key[:12],
                exc,
                _advice(self.directory),
            )
            return None

    def get_many(self, keys: Sequence[str]) -> list[Completion | None]:
        """`[get(k) for k in keys]` with one SQLite query per chunk of keys.

        diskcache has no bulk read, so this runs diskcache's own `get` query (same table,
        columns and expiry test) with `key IN (...)` on its connection, and decodes values
        with its `Disk`. Anything unusual about an entry (an unreadable value, a missing
        value file) or a failing query sends those keys through `get`, so damage is met,
        counted and logged exactly as there.
        """
        found: list[Completion | None] = [None] * len(keys)
        where: dict[str, int] = {}  # key -> its first position in `keys`
        repeats: list[tuple[int, str]] = []  # later positions of a key already asked for
        for i, key in enumerate(keys):
            # Like `get`: what this process stored but has not written yet, then what it
            # keeps in memory after a failed write, then the disk.
            kept = self._pending.get(key) or self._kept.get(key)
            if kept is not None:
                found[i] = kept
            elif key in where:
                repeats.append((i, key))
            elif key not in self._unreadable:
                where[key] = i
        asked = list(where)
        for start in range(0, len(asked), _KEYS_PER_QUERY):
            self._read_chunk(asked[start : start + _KEYS_PER_QUERY], where, found)
        for i, key in repeats:
            found[i] = found[where[key]]
        return found

    def _read_chunk(
        self, keys: list[str], where: dict[str, int], found: list[Completion | None]
    ) -> None:
        """Read `keys` into `found` (at the positions `where` gives) with one query."""
        sql = getattr(self._cache, "_sql", None)  # diskcache's statement runner
        if sql is not None:
            query = _SELECT_MANY.format(marks=",".join("?" * len(keys)))
            try:
                rows = sql(query, (*keys, time.time())).fetchall()
            except _STORAGE_ERRORS:
                sql = None
        if sql is None:  # a failing query, or a diskcache without `_sql`: key by key
            for key in keys:
                found[where[key]] = self.get(key)  # damage is met as `get` meets it
            return
        fetch = self._cache.disk.fetch
        for key, mode, filename, value in rows:
            try:
                # A value stored in the row is the bytes diskcache's fetch would return.
                raw = mode == _MODE_RAW and type(value) is bytes
                found[where[key]] = decode(value if raw else fetch(mode, filename, value, False))
            except (UnreadableEntry, *_STORAGE_ERRORS):
                found[where[key]] = self.get(key)  # counted and logged there

    def set(self, key: str, completion: Completion) -> None:
        """Queue `completion` for storing; `get` returns it from now on."""
        self._writes.submit(key, completion)

    def unwritten(self) -> int:
        """Results handed to `set` that are not yet through the writer thread."""
        return self._writes.unwritten()

    def flush(self) -> None:
        """Block until every result handed to `set` so far is stored (or kept in memory)."""
        self._writes.flush()

    def _store(self, batch: Batch) -> None:
        """Write `batch` (in the writer thread): one transaction, then read each one back."""
        records = [(key, completion, encode(completion)) for key, completion in batch]
        try:
            self._transaction(records)
        except diskcache.Timeout as exc:
            for key, completion, _ in records:
                self._failed(key, completion, exc)
            return
        except (UnreadableEntry, *_STORAGE_ERRORS):
            # One bad write spoils the transaction: write one at a time, so that only the
            # results that cannot be stored are kept in memory.
            for at, (key, completion, blob) in enumerate(records):
                try:
                    self._transaction([(key, completion, blob)])
                except diskcache.Timeout as exc:  # locked again: the rest would wait too
                    for key, completion, _ in records[at:]:
                        self._failed(key, completion, exc)
                    return
                except (UnreadableEntry, *_STORAGE_ERRORS) as exc:
                    self._failed(key, completion, exc)
                else:
                    self._verify(key, completion)
            return
        for key, completion, _ in records:
            self._verify(key, completion)

    def _transaction(self, records: list[tuple[str, Completion, bytes]]) -> None:
        """Store `records` in one transaction, trying again while another process holds
        the lock (each try waits up to the lock timeout)."""
        for attempt in range(1, LOCK_ATTEMPTS + 1):
            try:
                with self._cache.transact():
                    for key, _, blob in records:
                        self._cache.set(key, blob)
                return
            except diskcache.Timeout:
                if attempt == LOCK_ATTEMPTS:
                    raise
                log.debug(
                    "cache %s: locked by another process for %g s; trying again to store "
                    "%d results (try %d of %d)",
                    self.directory,
                    self._cache.timeout,
                    len(records),
                    attempt + 1,
                    LOCK_ATTEMPTS,
                )

    def _verify(self, key: str, completion: Completion) -> None:
        # A damaged index can take a row and lose it without an error; a read costs
        # microseconds beside the paid call that produced the result.
        try:
            if self._cache.get(key) is None:
                raise sqlite3.DatabaseError("the stored result cannot be read back")
        except (UnreadableEntry, *_STORAGE_ERRORS) as exc:
            self._failed(key, completion, exc)
            return
        self._unreadable.discard(key)
        if self._degraded:
            self._kept[key] = completion
        else:
            self._kept.pop(key, None)

    def _failed(self, key: str, completion: Completion, exc: BaseException) -> None:
        self._degraded |= isinstance(exc, sqlite3.DatabaseError)
        self._kept[key] = completion
        self.stats.write_errors += 1
        level = logging.WARNING if self.stats.write_errors == 1 else logging.DEBUG
        if isinstance(exc, diskcache.Timeout):
            why = f"another process held its lock for {LOCK_ATTEMPTS} x {self._cache.timeout:g} s"
            advice = "give a process that writes for long its own --cache-dir"
        else:
            why, advice = str(exc), "free disk space or " + _advice(self.directory)
        log.log(
            level,
            "cache %s: cannot store a result (%s); it is kept in memory for this run, "
            "but a later run will pay for it again: %s",
            self.directory,
            why,
            advice,
        )

    def entries(self) -> Iterator[tuple[str, bytes | None]]:
        """Every stored key with its raw value (None when unreadable), a page of keys at
        a time in key order: constant memory, for `opro cache export`."""
        self.flush()
        for key in self._cache.iterkeys():
            if not isinstance(key, str):
                continue  # not a request key: this cache stores only those
            try:
                blob = self._cache.get(key)
            except (UnreadableEntry, *_STORAGE_ERRORS):
                blob = None
            yield key, blob if type(blob) is bytes else None

    def __len__(self) -> int:
        self.flush()
        return len(self._cache)

    def close(self) -> None:
        """Store what is queued, stop the writer thread, close the database."""
        self._writes.close()
        if self.stats.unreadable or self.stats.write_errors:
            log.warning(
                "cache %s: %d unreadable entries counted as misses, %d results not stored",
                self.directory,
                self.stats.unreadable,
                self.stats.write_errors,
            )
        self._cache.close()
