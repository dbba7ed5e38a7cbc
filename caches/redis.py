"""The shared result cache: the disk cache's keys and JSON records, in a Redis server.

Every process and machine of a sweep that points at the same Redis reads what any of them
paid for. Entries are Redis strings: the key is `KEY_PREFIX` + the request key of
`caches.keys` (sha256 hex), so `opro:v1:3f2a...`; the value is exactly the bytes the disk
cache stores (`caches.base.encode`), validated by `decode` on every read, so a damaged or
foreign value is a miss (counted in `stats.unreadable`), never a crash or a wrong answer.
The `v1` names this layout: a change to it gets a new prefix, and old entries are simply
missed. Nothing expires: an evicted answer would silently be paid for again, so the server
should run with `maxmemory-policy noeviction` (its default) and persistence (RDB or AOF).

Reads (`get_many`) run inline on the event loop, as the engine calls them: one pipelined
round trip of MGETs per chunk of keys. Writes go through the write-behind thread of
`caches.writer` (one pipeline of SETs per batch; `set` returns at once and the result is
read back from the pending map until stored), so the loop never waits for the network.

Redis going away is handled on both paths, differently, on purpose:

* unreachable when the cache opens: `RedisUnavailable`, one line naming the URL (password
  masked) and what to do, before anything is paid for;
* a write that fails mid-run (a restart, a network blip) is retried with backoff until the
  server answers again; the results stay readable from memory meanwhile, so nothing paid
  for is lost. `flush` and `close` wait for them at most `flush_wait`/`close_wait` seconds
  after the outage began (not each that long: an evaluation, the engine and `close` all
  flush), then `close` logs one warning with the count of results not stored (a later run
  pays for those again);
* a read that fails is retried briefly (`READ_ATTEMPTS`), then the keys are misses: a miss
  re-pays one call, while waiting for the server would stall every call of the run.

Credentials in the URL (`redis://:password@host`) never appear in logs or errors: the
cache is named by `label`, the URL with its userinfo masked.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from opro.caches.base import CacheStats, UnreadableEntry, decode, encode
from opro.caches.disk import CacheError
from opro.caches.writer import Batch, WriteBehind
from opro.providers.types import Completion
from opro.providers.urls import redact_url, scrub

log = logging.getLogger("opro.cache")

KEY_PREFIX = "opro:v1:"
# A read that fails is tried this many times (waits READ_BACKOFF_S, then twice that, ...).
READ_ATTEMPTS = 3
READ_BACKOFF_S = 0.05
# A write batch that fails waits WRITE_BACKOFF_S, doubling up to WRITE_BACKOFF_MAX_S.
WRITE_BACKOFF_S = 0.05
WRITE_BACKOFF_MAX_S = 2.0
# How long `close` waits for results still unstored before giving them up (with a warning).
CLOSE_WAIT_S = 30.0
# How long one flush (the end of an evaluation) waits for writes while Redis is away; the
# rest stay queued and retried, readable from memory.
FLUSH_WAIT_S = 30.0
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0
# Keys per MGET; the chunks of one `get_many` go in one pipelined round trip.
KEYS_PER_MGET = 1000
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)


class RedisUnavailable(CacheError):
    """The Redis server of `--cache` cannot be reached or refuses this client."""


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


class RedisCache:
    """Request key -> completion, stored as JSON strings in a Redis server."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = KEY_PREFIX,
        close_wait: float = CLOSE_WAIT_S,
        flush_wait: float = FLUSH_WAIT_S,
        connect_timeout: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.label = redact_url(url)  # the only form of the URL that is ever shown
        self._secret = _password(url)
        self.prefix = prefix
        self.stats = CacheStats()
        self._close_wait = close_wait
        self._flush_wait = flush_wait
        self._kept: dict[str, Completion] = {}  # given up on (close): served from memory
        self._give_up = threading.Event()  # set by close after its wait: stop retrying
        self._read_failing = False  # the last read failed: try once, not READ_ATTEMPTS
        self._down_since: float | None = None  # when writes began to fail (monotonic)
        self._exit_hook: Callable[[], None] | None = None
        try:
            # redis-py's own retries are off: this class decides how each path retries.
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=SOCKET_TIMEOUT_S,
                socket_connect_timeout=connect_timeout,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        except ValueError as exc:
            raise CacheError(
                f"--cache {self.label} is not a Redis URL this client accepts "
                f"({self._scrub(exc)}): use redis://HOST:PORT/DB, rediss://... or "
                "unix:///path/to/redis.sock"
            ) from exc
        try:
            self._client.ping()
        except redis.RedisError as exc:
            self._client.close()
            raise RedisUnavailable(
                f"cannot reach the Redis cache at {self.label} ({self._scrub(exc)}): start "
                "Redis there or fix --cache (redis://HOST:PORT/DB), or use a local disk "
                "cache with --cache-dir DIR"
            ) from exc
        self._writes = WriteBehind(self._store, name="opro-redis-writer")
        self._pending = self._writes.pending
        log.debug("cache %s: open (keys %s*)", self.label, prefix)

    def _scrub(self, exc: BaseException) -> str:
        return scrub(str(exc) or type(exc).__name__, [self._secret])

    # --- reads -------------------------------------------------------------------------

    def get(self, key: str) -> Completion | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[str]) -> list[Completion | None]:
        """`[get(k) for k in keys]` in one pipelined round trip (what this process has
        stored but not yet written comes from memory)."""
        found: list[Completion | None] = [None] * len(keys)
        asked: list[int] = []
        for i, key in enumerate(keys):
            mine = self._pending.get(key) or self._kept.get(key)
            if mine is not None:
                found[i] = mine
            else:
                asked.append(i)
        if not asked:
            return found
        blobs = self._fetch([self.prefix + keys[i] for i in asked])
        if blobs is None:
            return found
        for i, blob in zip(asked, blobs, strict=True):
            if blob is not None:
                found[i] = self._decoded(keys[i], blob)
        return found

    def _fetch(self, names: list[str]) -> list[object] | None:
        """The raw values of `names`, or None when Redis cannot be read (then all misses)."""
        attempts = 1 if self._read_failing else READ_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                if len(names) <= KEYS_PER_MGET:  # the engine's chunks: one MGET
                    parts: list[list[Any]] = [self._client.mget(names)]
                else:
                    pipe = self._client.pipeline(transaction=False)
                    for start in range(0, len(names), KEYS_PER_MGET):
                        pipe.mget(names[start : start + KEYS_PER_MGET])
                    parts = pipe.execute()
            except _UNREACHABLE as exc:
                if attempt < attempts:
                    time.sleep(READ_BACKOFF_S * 2 ** (attempt - 1))
                    continue
                self._read_failed(len(names), exc)
                return None
            self._read_failing = False
            return [blob for part in parts for blob in part]
        return None  # not reached: the loop returns

    def _read_failed(self, n: int, exc: BaseException) -> None:
        first = not self._read_failing
        self._read_failing = True
        self.stats.read_errors += n
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "cache %s: cannot read from Redis (%s); %d results count as misses (a miss "
            "re-pays one call, waiting would stall the run)",
            self.label,
            self._scrub(exc),
            n,
        )

    def _decoded(self, key: str, blob: object) -> Completion | None:
        try:
            return decode(blob)
        except UnreadableEntry as exc:
            self.stats.unreadable += 1
            log.log(
                logging.WARNING if self.stats.unreadable == 1 else logging.DEBUG,
                "cache %s: entry %s... is unreadable (%s), so it counts as a miss",
                self.label,
                key[:12],
                exc,
            )
            return None

    def entries(self, batch: int = KEYS_PER_MGET) -> Iterator[tuple[str, bytes | None]]:
        """Every key under the prefix with its raw value (None if it vanished meanwhile),
        a SCAN page and one MGET at a time: constant memory, for `opro cache export`."""
        names: list[bytes] = []
        pattern = _glob_escape(self.prefix) + "*"
        try:
            for name in self._client.scan_iter(match=pattern, count=batch):
                names.append(name)
                if len(names) == batch:
                    yield from self._pairs(names)
                    names = []
            yield from self._pairs(names)
        except _UNREACHABLE as exc:
            raise RedisUnavailable(
                f"lost the Redis cache at {self.label} while listing it ({self._scrub(exc)}): "
                "run the command again once it is back"
            ) from exc

    def _pairs(self, names: list[bytes]) -> Iterator[tuple[str, bytes | None]]:
        if not names:
            return
        values = self._client.mget(names)
        cut = len(self.prefix.encode())
        for name, value in zip(names, values, strict=True):
            yield name[cut:].decode("utf-8", "replace"), value if type(value) is bytes else None

    # --- writes ------------------------------------------------------------------------

    def set(self, key: str, completion: Completion) -> None:
        """Queue `completion` for storing; `get` returns it from now on."""
        self._writes.submit(key, completion)
        if self._exit_hook is None:
            # Registered after the writer's own hook, so it runs first (atexit is LIFO): a
            # program that exits without `close` while Redis is away waits `close_wait`,
            # not forever, for the writer, and says what was not stored.
            self._exit_hook = functools.partial(_close_at_exit, weakref.ref(self))
            atexit.register(self._exit_hook)

    def unwritten(self) -> int:
        return self._writes.unwritten()

    def flush(self) -> None:
        """Wait until what `set` was given is stored; while Redis is away, at most until
        `flush_wait` seconds after it went (the rest stays queued, retried, readable)."""
        self._wait(self._flush_wait)

    def _wait(self, limit: float) -> bool:
        """Flush, bounded by `limit` seconds from the start of the current outage (or from
        now): the flushes of an evaluation, of the engine and of `close` share one bound."""
        down = self._down_since
        anchor = down if down is not None else time.monotonic()
        return self._writes.flush(timeout=max(0.0, anchor + limit - time.monotonic()))

    def _store(self, batch: Batch) -> None:
        """Store `batch` (in the writer thread) with one pipeline, retrying what failed
        to reach Redis until it answers or `close` gives up."""
        todo = [(key, completion, encode(completion)) for key, completion in batch]
        delay, failures = WRITE_BACKOFF_S, 0
        while todo:
            if self._give_up.is_set() and (failures or self._down_since is not None):
                for key, completion, _ in todo:
                    self._kept[key] = completion
                self.stats.write_errors += len(todo)
                return
            try:
                pipe = self._client.pipeline(transaction=False)
                for key, _, blob in todo:
                    pipe.set(self.prefix + key, blob)
                results = pipe.execute(raise_on_error=False)
            except _UNREACHABLE as exc:
                results = [exc] * len(todo)
            retry = []
            for record, result in zip(todo, results, strict=True):
                if isinstance(result, _UNREACHABLE):
                    retry.append(record)
                elif isinstance(result, Exception):  # refused (OOM, READONLY): keep it
                    self._refused(record[0], record[1], result)
            if retry and len(retry) == len(todo):
                failures += 1
                if self._down_since is None:  # a new outage: say so once
                    self._down_since = time.monotonic()
                    log.warning(
                        "cache %s: cannot write to Redis (%s); retrying %d results until it "
                        "answers (they are kept in memory meanwhile)",
                        self.label,
                        self._scrub(results[0]),
                        len(retry),
                    )
                self._give_up.wait(delay)
                delay = min(2 * delay, WRITE_BACKOFF_MAX_S)
            else:
                self._down_since = None
                if failures:
                    log.warning("cache %s: Redis answers again; writes resumed", self.label)
                    failures = 0
            todo = retry

    def _refused(self, key: str, completion: Completion, exc: BaseException) -> None:
        self._kept[key] = completion
        self.stats.write_errors += 1
        log.log(
            logging.WARNING if self.stats.write_errors == 1 else logging.DEBUG,
            "cache %s: Redis refused to store a result (%s); it is kept in memory for this "
            "run, but a later run will pay for it again: check the server's maxmemory "
            "(use noeviction) and that it is a writable primary",
            self.label,
            self._scrub(exc),
        )

    def close(self) -> None:
        """Store what is queued (waiting at most `close_wait` s for an absent server),
        stop the writer thread, close the connections."""
        if self._exit_hook is not None:
            atexit.unregister(self._exit_hook)
            self._exit_hook = None
        if not self._wait(self._close_wait):
            self._give_up.set()
        self._writes.close()
        if self.stats.write_errors:
            log.warning(
                "cache %s: %d results could not be stored in Redis; a later run will pay "
                "for them again",
                self.label,
                self.stats.write_errors,
            )
        self._client.close()


def _close_at_exit(ref: weakref.ref[RedisCache]) -> None:
    cache = ref()
    if cache is not None:
        cache._exit_hook = None  # running now: nothing to unregister
        cache.close()


def _glob_escape(text: str) -> str:
    """`text` as a literal in a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
