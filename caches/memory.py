"""An in-process cache with the disk cache's interface, for tests and throwaway runs."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from opro.caches.base import CacheStats
from opro.providers.types import Completion


class MemoryCache:
    """A bounded LRU map from request key to completion."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._data: OrderedDict[str, Completion] = OrderedDict()
        self._max = max_entries
        self.stats = CacheStats()  # nothing in memory is ever unreadable

    def get(self, key: str) -> Completion | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def get_many(self, keys: Sequence[str]) -> list[Completion | None]:
        return [self.get(key) for key in keys]

    def set(self, key: str, completion: Completion) -> None:
        self._data[key] = completion
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def close(self) -> None:
        self._data.clear()
