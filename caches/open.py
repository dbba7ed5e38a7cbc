"""`open_cache(spec)`: the result cache a cache setting names, for processes that get only
the setting (a sweep's Ray actors build their own cache from the sweep's `--cache-dir`).

None is the default disk cache; anything else is a cache directory. (The shared backend,
`redis://host:port/db`, is added here by the Redis work.)
"""

from __future__ import annotations

from pathlib import Path

from opro.caches.base import ResultCache
from opro.caches.disk import DiskCache


def open_cache(spec: str | None) -> ResultCache:
    """The cache `spec` names: a directory path, or None for the default directory."""
    return DiskCache(Path(spec)) if spec is not None else DiskCache()
