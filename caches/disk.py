"""The persistent result cache: diskcache (SQLite + files) holding JSON records.

diskcache is process-safe (SQLite in WAL mode), so two runs can share one directory, and a
killed process loses at most the write it was making. Records are orjson bytes, never
pickles, so a cache written by one version of the code can be read, inspected or migrated
by another. Eviction is off: evicting paid-for answers would silently re-pay them.
"""

from __future__ import annotations

import os
from pathlib import Path

import diskcache
import platformdirs

from ..errors import OproError
from ..providers.types import Completion
from .base import decode, encode


def default_cache_dir() -> Path:
    """`$OPRO_CACHE_DIR`, else the platform's user cache directory."""
    env = os.environ.get("OPRO_CACHE_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_cache_dir("opro-engine")) / "results"


class CacheError(OproError, OSError):
    """The cache directory cannot be opened or written."""


class DiskCache:
    """Request key -> completion, stored as JSON in a diskcache directory."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._cache = diskcache.Cache(
                str(self.directory),
                size_limit=2**62,
                eviction_policy="none",
                cull_limit=0,
            )
        except (OSError, diskcache.Timeout) as exc:  # sqlite3 errors subclass neither
            raise CacheError(f"cannot open cache directory {self.directory}: {exc}") from exc
        except Exception as exc:  # sqlite3.OperationalError on an unwritable directory
            raise CacheError(f"cannot open cache directory {self.directory}: {exc}") from exc

    def get(self, key: str) -> Completion | None:
        blob = self._cache.get(key)
        if blob is None:
            return None
        return decode(blob)

    def set(self, key: str, completion: Completion) -> None:
        self._cache.set(key, encode(completion))

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._cache.close()
