"""Copy results between caches through a JSONL file: `opro cache export` and `import`.

The file holds one record per line, `{"key": "<sha256 hex>", "value": <the cache's JSON
record>}`, in the exact bytes `caches.base.encode` writes, so a disk cache and a Redis cache
exchange results unchanged (a disk -> file -> Redis -> file -> disk round trip is byte-equal).
Both directions stream: export walks the source a page of keys at a time into `FILE.part`,
renamed to FILE only once complete; import reads the file twice, first validating every
line (so a malformed line at line 90,000 is reported with its number before anything is
written), then storing it a batch at a time, comparing with what the destination holds: a
record already there with the same value is not written again, so importing a file twice
changes nothing. Memory stays constant for any number of records.

A record is checked as the caches check what they read (`caches.base.from_record`): token
counts are integers in [0, 2^53), so NaN, infinities, floats and huge numbers are refused
(orjson itself refuses NaN and Infinity literals and numbers that overflow a double).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson

from opro.caches.base import (
    ResultCache,
    UnreadableEntry,
    WritesBehind,
    decode,
    encode,
    from_record,
)
from opro.errors import OproError
from opro.providers.types import Completion

KEY = re.compile(r"[0-9a-f]{64}")
# Records compared and stored together (one `get_many`, one flush) on import.
BATCH = 512


class TransferError(OproError):
    """An export or import that cannot be done as asked; the message names the line."""


class Listable(Protocol):
    """A cache that can list its entries (`DiskCache`, `RedisCache`)."""

    def entries(self) -> Iterator[tuple[str, bytes | None]]: ...


@dataclass(frozen=True, slots=True)
class Exported:
    records: int  # written to the file
    skipped: int  # entries that are not readable results (damaged, foreign): left out


@dataclass(frozen=True, slots=True)
class Imported:
    records: int  # lines in the file
    added: int  # keys the destination did not hold
    replaced: int  # keys it held with another value
    unchanged: int  # keys it already held with this value (not written again)


def export_cache(cache: ResultCache, out: Path) -> Exported:
    """Write every readable result of `cache` to `out` (JSONL, replaced atomically)."""
    entries = getattr(cache, "entries", None)
    if entries is None:
        raise TransferError(f"a {type(cache).__name__} cannot list its results for export")
    part = out.with_name(out.name + ".part")
    records = skipped = 0
    try:
        with part.open("wb") as f:
            for key, blob in entries():
                try:
                    if blob is None or KEY.fullmatch(key) is None:
                        raise UnreadableEntry("not a result")
                    value = encode(decode(blob))
                except UnreadableEntry:
                    skipped += 1
                    continue
                f.write(b'{"key":"' + key.encode() + b'","value":' + value + b"}\n")
                records += 1
        os.replace(part, out)
    except OSError as exc:
        raise TransferError(f"cannot write {out}: {exc.strerror or exc}") from exc
    finally:
        part.unlink(missing_ok=True)
    return Exported(records, skipped)


def parse_line(line: bytes, where: str) -> tuple[str, Completion]:
    """The key and result of one export line; `TransferError` naming `where` otherwise."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise TransferError(f"{where}: not a JSON record ({exc})") from None
    if not isinstance(record, dict) or set(record) != {"key", "value"}:
        raise TransferError(f'{where}: not a {{"key": ..., "value": ...}} record')
    key = record["key"]
    if not isinstance(key, str) or KEY.fullmatch(key) is None:
        raise TransferError(f"{where}: the key is not a cache key (64 lowercase hex digits)")
    try:
        return key, from_record(record["value"])
    except UnreadableEntry as exc:
        raise TransferError(f"{where}: the value is not a cached result ({exc})") from None


def read_export(path: Path) -> Iterator[tuple[str, Completion]]:
    """The records of an export file, one line at a time, each validated."""
    try:
        with path.open("rb") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield parse_line(line, f"{path}:{number}")
    except OSError as exc:
        raise TransferError(f"cannot read {path}: {exc.strerror or exc}") from exc


def import_cache(cache: ResultCache, path: Path) -> Imported:
    """Store the records of `path` in `cache`, after checking every line of it."""
    try:
        total = sum(1 for _ in read_export(path))
    except TransferError as exc:
        raise TransferError(f"{exc}; fix or delete that line and import again") from None
    added = replaced = unchanged = 0
    failed_before = cache.stats.write_errors
    batch: dict[str, Completion] = {}
    records = read_export(path)
    while True:
        for key, completion in records:
            batch[key] = completion  # a key repeated in the file: its last line counts
            if len(batch) == BATCH:
                break
        if not batch:
            break
        keys = list(batch)
        for key, held in zip(keys, cache.get_many(keys), strict=True):
            new = batch[key]
            if held is not None and encode(held) == encode(new):
                unchanged += 1
                continue
            if held is None:
                added += 1
            else:
                replaced += 1
            cache.set(key, new)
        if isinstance(cache, WritesBehind):
            cache.flush()  # bounds what waits in memory, whatever the file's size
        batch = {}
    failed = cache.stats.write_errors - failed_before
    if failed:
        raise TransferError(
            f"{failed} of the {total} records of {path} could not be stored (see the warning "
            "above); import the file again once the cache is writable"
        )
    return Imported(total, added, replaced, unchanged)
