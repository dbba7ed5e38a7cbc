"""The provider interface: one async call plus two identity hooks; and the HTTP base.

A provider turns a `Request` into a `Completion` for one model of one vendor, and raises
the classes of `providers.errors` when that fails. It does no caching, limiting or
retrying: `opro.engine.model.Model` owns those, so every provider gets them for free.

`HttpProvider` owns what every hosted vendor does the same way: where to send (base URL
from the argument, the vendor's environment variable, or the vendor's default), with which
key (argument, else environment; refused when missing on the vendor's own server), the
headers, the connection key and the cache identity, and the checked, scrubbed POST. A
vendor subclass sets class attributes and keeps only its wire format and error mapping.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import aiohttp

from opro.providers.errors import ConfigurationError, ProviderError
from opro.providers.http import RawResponse, classify_status, post_json, scrubbed
from opro.providers.types import Completion, Request
from opro.providers.urls import BaseUrl, parse_base_url

PROBE_TIMEOUT_S = 10.0  # the longest a health probe of a pooled replica waits


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

    async def prepare(self) -> None:
        """Finish slow set-up (such as hashing a model file for `cache_identity`) without
        blocking the event loop; the engine awaits it before the first cache key."""
        return None

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


class HttpProvider(Provider):
    """One model behind a vendor's HTTP API (or a server or proxy speaking it).

    Subclasses set the class attributes and `headers()`, and implement `complete()` with
    `post()` and `failure()`. The key is kept only in `_api_key` and the headers: it is
    never part of `connection_key()` (a fingerprint is), `cache_identity()` or a message.
    """

    default_base_url: ClassVar[str]
    base_url_env: ClassVar[str]  # e.g. OPENAI_BASE_URL
    key_envs: ClassVar[tuple[str, ...]]  # the first one set (non-empty) gives the key
    missing_key: ClassVar[str]  # the one-line error when no key is set for the default URL
    strip_suffix: ClassVar[str] = ""  # a version path the vendor's SDKs leave out of the URL

    def __init__(
        self,
        model: str,
        *,
        http: HttpPool,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        super().__init__(model)
        self._http = http
        self._base: BaseUrl = parse_base_url(
            base_url or os.environ.get(self.base_url_env) or self.default_base_url,
            key_env=self.key_hint(),
            strip_suffix=self.strip_suffix,
        )
        self.base_url = self._base.url
        self._api_key = api_key if api_key is not None else self.key_from_env()
        if not self._api_key and self.base_url == self.default_base_url:
            raise ConfigurationError(self.missing_key)
        self.timeout = timeout
        self._headers = self.headers(self._api_key)

    @classmethod
    def key_from_env(cls) -> str | None:
        return next((v for v in map(os.environ.get, cls.key_envs) if v), None)

    def key_hint(self) -> str:
        """Where the key goes instead of the base URL (quoted when a URL holds one)."""
        return f"the {self.key_envs[0]} environment variable"

    @abstractmethod
    def headers(self, api_key: str | None) -> dict[str, str]:
        """Every request's headers; the key goes in here (an empty key sends none)."""

    def identity_extra(self) -> dict[str, Any]:
        """Settings besides the model that change answers (e.g. the API flavour)."""
        return {}

    def connection_key(self) -> str:
        return f"{self.name}|{self._base.identity()}|{fingerprint(self._api_key)}"

    def cache_identity(self) -> dict[str, Any]:
        identity: dict[str, Any] = {"model": self.spec, **self.identity_extra()}
        if self.base_url != self.default_base_url:
            # Another server or proxy may serve other weights under the same name.
            identity["base_url"] = self._base.safe  # a key in the query stays out of keys
        return identity

    @property
    def where(self) -> str:
        """The model and server as messages name them (no secret)."""
        return f"{self.spec} at {self._base.safe}"

    async def post(self, path: str, payload: Any) -> RawResponse:
        """POST `payload` to `path` under the base URL; transport failures are classified."""
        return await post_json(
            self._http.session(),
            self._base.join(path),
            payload,
            headers=self._headers,
            timeout=self.timeout,
            where=self.where,
        )

    async def probe(self) -> bool:
        """Whether the server answers at all: a GET of `/models` that gets any status below
        500 (a server without that route still answers 404). How an endpoint pool sees a
        replica that failed come back, without spending a user's call on it."""
        try:
            async with self._http.session().get(
                self._base.join("/models"),
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=min(self.timeout, PROBE_TIMEOUT_S)),
            ) as resp:
                return resp.status < 500
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    def classify(self, resp: RawResponse) -> ProviderError:
        """The error class of a non-2xx response (vendors refine the generic mapping)."""
        return classify_status(resp.status, resp.body, resp.headers, where=self.where)

    def failure(self, resp: RawResponse) -> ProviderError:
        """The classified error of a non-2xx response, its message scrubbed of secrets."""
        return scrubbed(self.classify(resp), self._api_key, *self._base.secrets)
