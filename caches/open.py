"""One cache spec -> one result cache: what `--cache`, `Engine(cache="...")` and each Ray
actor use, so every process of a sweep opens the same store from the same string.

A spec is a Redis URL (`redis://HOST:PORT/DB`, `rediss://...` for TLS,
`unix:///path/redis.sock?db=0`) for the shared `RedisCache`, or a directory for the
one-machine `DiskCache`; None is the default disk cache directory. Any other `scheme://`
is refused rather than taken for a directory name. redis-py is imported only for a Redis
URL, so the disk cache works without the `redis` extra.
"""

from __future__ import annotations

import re
from pathlib import Path

from opro.caches.base import ResultCache
from opro.caches.disk import CacheError, DiskCache
from opro.providers.urls import redact_url

__all__ = ["cache_label", "check_cache_spec", "is_url", "open_cache"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
REDIS_SCHEMES = ("redis", "rediss", "unix")
INSTALL = "pip install 'opro-engine[redis]'"


def is_url(spec: str) -> bool:
    """True for `scheme://...` (a URL, supported or not), False for a directory."""
    return _SCHEME.match(spec) is not None


def cache_label(spec: str | None) -> str | None:
    """`spec` fit to show or store (run files, logs): a URL's password masked."""
    return redact_url(spec) if spec is not None and is_url(spec) else spec


def check_cache_spec(spec: str) -> str:
    """`spec` if it names a cache this code can open (without connecting), else
    `CacheError` saying what is accepted."""
    if not spec.strip():
        raise CacheError("the cache is empty: give a directory or redis://HOST:PORT/DB")
    match = _SCHEME.match(spec)
    if match is not None and match.group(1).lower() not in REDIS_SCHEMES:
        raise CacheError(
            f"{cache_label(spec)} is not a cache this version can use: give a directory "
            "or a Redis URL (redis://HOST:PORT/DB, rediss://..., unix:///path/redis.sock)"
        )
    return spec


def open_cache(spec: str | None) -> ResultCache:
    """The cache `spec` names: None -> the default disk cache, a directory -> a disk
    cache there, a Redis URL -> `RedisCache` (unreachable: `RedisUnavailable`)."""
    if spec is None:
        return DiskCache()
    check_cache_spec(spec)
    if not is_url(spec):
        return DiskCache(Path(spec).expanduser())
    try:
        from opro.caches.redis import RedisCache
    except ImportError as exc:
        raise CacheError(
            f"--cache {cache_label(spec)} needs redis-py, which is not installed: {INSTALL}"
        ) from exc
    return RedisCache(spec)
