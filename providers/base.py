"""The provider interface: one async call plus two identity hooks.

A provider turns a `Request` into a `Completion` for one model of one vendor, and raises
the classes of `providers.errors` when that fails. It does no caching, limiting or
retrying: `opro.engine.model.Model` owns those, so every provider gets them for free.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any

import aiohttp

from opro.providers.types import Completion, Request


class HttpPool:
    """One lazily created `aiohttp.ClientSession` shared by every provider of an engine.

    The session is created on first use inside the running loop (aiohttp requires that)
    and pools connections per host. Its connector is unbounded: the engine's per-connection
    semaphores decide how many requests are open, not aiohttp's default of 100.
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None)
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


def fingerprint(secret: str | None) -> str:
    """A short one-way tag for a credential, so limits can be kept per account in memory."""
    if not secret:
        return "-"
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


class Provider(ABC):
    """One model of one vendor. Subclasses set `name` and implement `complete`."""

    name: str = ""

    def __init__(self, model: str) -> None:
        self.model = model

    @property
    def spec(self) -> str:
        """The user-facing `provider/model` name."""
        return f"{self.name}/{self.model}"

    @abstractmethod
    async def complete(self, request: Request) -> Completion:
        """Send one request; raise a `ProviderError` subclass when it fails."""

    def connection_key(self) -> str:
        """Requests with the same key share rate limits (vendor + account or server)."""
        return self.name

    def cache_identity(self) -> dict[str, Any]:
        """Everything about this provider that can change an answer (never credentials)."""
        return {"model": self.spec}

    @property
    def supports_n(self) -> bool:
        """Whether one call can return `n > 1` samples (otherwise the engine splits it)."""
        return False

    async def aclose(self) -> None:
        """Release resources the provider owns itself (shared HTTP pools excluded)."""
        return None
