"""The storage interface the engine needs from a result cache, and the stored record.

A cache maps a request key to the raw `Completion` (texts, usage, finish reasons), never a
grade: grades are recomputed from the stored text on every read, so a grading fix takes
effect on all stored outputs at once and nothing has to be invalidated. Failures are never
stored, because only a `Completion` can be.

A stored record is data from disk, so `decode` checks its whole shape and raises
`UnreadableEntry` for anything that is not a record this code wrote; the caches turn that
into a miss (counted in `CacheStats`), never into a crash or a wrong answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import orjson

from opro.providers.types import Completion, Usage


class UnreadableEntry(ValueError):
    """A stored value that is not a completion record (damaged, truncated or foreign)."""


@dataclass(slots=True)
class CacheStats:
    """Damage a cache met and survived: each unreadable entry was a miss, each failed
    write a result kept in memory for the rest of the process."""

    unreadable: int = 0
    write_errors: int = 0
    read_errors: int = 0  # reads that failed (a shared server unreachable): misses


class ResultCache(Protocol):
    stats: CacheStats

    def get(self, key: str) -> Completion | None: ...

    def get_many(self, keys: Sequence[str]) -> list[Completion | None]:
        """`[get(k) for k in keys]`, in as few storage round trips as the cache can."""
        ...

    def set(self, key: str, completion: Completion) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class WritesBehind(Protocol):
    """A cache whose `set` returns before the result is stored (`DiskCache`)."""

    def unwritten(self) -> int: ...

    def flush(self) -> None: ...


async def flush_writes(cache: object) -> None:
    """Wait, without blocking the event loop, until `cache` has stored what it was given.

    Reports count failed writes only once they are attempted, and a closing engine must not
    lose queued results; a cache that stores synchronously needs nothing.
    """
    if isinstance(cache, WritesBehind) and cache.unwritten():
        await asyncio.to_thread(cache.flush)


def encode(completion: Completion) -> bytes:
    """JSON bytes for a completion (the rate-limit headers are transient and dropped)."""
    record: dict[str, Any] = {
        "texts": completion.texts,
        "in": completion.usage.input_tokens,
        "out": completion.usage.output_tokens,
        "finish": completion.finish_reasons,
    }
    return orjson.dumps(record)


_JSON_BLOBS = (bytes, str)


def _all_strings(items: list[Any], *, none: bool) -> bool:
    """Every item a string (or None, with `none`); a loop, as this runs for every cache hit
    (`all()` over a generator costs four times as much here)."""
    for item in items:  # noqa: SIM110
        if not (isinstance(item, str) or (none and item is None)):
            return False
    return True


def _count(record: dict[str, Any], name: str) -> int:
    value = record.get(name)
    if type(value) is not int or not 0 <= value < 2**53:  # bool and float are refused
        raise UnreadableEntry(f"{name!r} is not a token count: {value!r:.40}")
    return value


def decode(blob: object) -> Completion:
    """The completion in a stored record; `UnreadableEntry` for anything else."""
    if not isinstance(blob, _JSON_BLOBS):
        raise UnreadableEntry(f"a {type(blob).__name__} value, not JSON bytes")
    try:
        record = orjson.loads(blob)
    except orjson.JSONDecodeError as exc:
        raise UnreadableEntry(f"not valid JSON ({len(blob)} bytes, truncated?)") from exc
    return from_record(record)


def from_record(record: object) -> Completion:
    """The completion in a parsed record (a JSON object); `UnreadableEntry` for anything else."""
    if not isinstance(record, dict):
        raise UnreadableEntry(f"a JSON {type(record).__name__}, not a record")
    texts = record.get("texts")
    if not isinstance(texts, list) or not texts or not _all_strings(texts, none=False):
        raise UnreadableEntry("'texts' is not a non-empty list of strings")
    finish = record.get("finish", [])
    if not isinstance(finish, list) or not _all_strings(finish, none=True):
        raise UnreadableEntry("'finish' is not a list of strings")
    return Completion(
        texts=tuple(texts),
        usage=Usage(_count(record, "in"), _count(record, "out")),
        finish_reasons=tuple(finish),
    )
