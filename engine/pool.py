"""Endpoint pools: one model served by several replicas of one OpenAI-compatible server.

`Engine.model(spec, base_url=[URL1, URL2, ...])` builds one provider per URL (each URL is
checked, credentials refused, on its own) and puts an `EndpointPool` where a model's
`ConnectionLimiter` would be. To `Model` the pool *is* its limiter: a slot of the pool
names the endpoint the call goes to, and the rest of the call path (cache, single-flight,
budget, retries) is the same as for one URL.

What is per endpoint and what is per model:

- **Per endpoint**: the concurrency window (the endpoint's own `ConnectionLimiter`, AIMD
  when no rate is given, shared with any other model on that URL), its 429 cooldown and
  Retry-After, and its health.
- **Per model (the whole pool)**: the user's requests/min and tokens/min (the pool's own
  rate limits, which this class inherits), the budget (the engine's, as for any model),
  and the waiting line: callers wait in the pool's semaphore (by priority, round-robin
  across flows), whose size is the sum of the usable endpoints' windows, so a call is not
  committed to one endpoint's queue while another has room.

Routing: a call admitted by the pool goes to the usable endpoint with the fewest calls in
flight relative to its window (an endpoint in a 429 cooldown is used last), so endpoints
of different capacity get shares of the calls proportional to what they can take.

Health: an endpoint that fails for an infrastructure reason (no status: refused, dropped,
timed out; or `PoolPolicy.max_5xx` 5xx answers in a row) is taken out of the pool. While
it is out, a background probe (`HttpProvider.probe`, a GET of `/models`, never a user's
call) asks whether it answers, after a backoff that doubles with each failed probe; the
first answer puts it back. The call that failed is retried at once on another endpoint
(it counts as one attempt of the retry policy; a failure is never graded and never
cached). When no endpoint is usable (every one is out), calls go to the endpoints anyway
and fail, wait and retry exactly as calls to one unreachable server do, so an outage of
the whole pool ends in `ModelCallError` and `--max-errors` as before; a call that gets
through puts its endpoint back.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from opro.checks import CONCURRENCY
from opro.engine.leases import CapacitySource
from opro.engine.limits import ConnectionLimiter, ConnectionRateLimited, LimitConfig, _Slot
from opro.engine.retry import DEFAULT_MAX_RETRY_AFTER_S
from opro.errors import SettingsError
from opro.providers.base import HttpProvider, Provider
from opro.providers.errors import ConfigurationError, ProviderError, RateLimitError
from opro.providers.types import Completion, Request
from opro.providers.urls import redact_url

log = logging.getLogger("opro.pool")

# Failed calls whose endpoint is remembered until their caller asks `retry_delay`.
_MAX_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """How a pool takes a failing endpoint out and probes it back in (seconds)."""

    down_base_s: float = 1.0  # from being taken out to the first probe
    down_max_s: float = 60.0  # the longest wait between probes (it doubles up to it)
    max_5xx: int = 3  # 5xx answers in a row (no success between) that take an endpoint out

    def __post_init__(self) -> None:
        for name, value in (("down_base_s", self.down_base_s), ("down_max_s", self.down_max_s)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise SettingsError(f"pool {name} must be a number of seconds >= 0, got {value!r}")
        if not (isinstance(self.max_5xx, int) and self.max_5xx >= 1):
            raise SettingsError(f"pool max_5xx must be an integer >= 1, got {self.max_5xx!r}")


def pool_urls(base_url: str | Sequence[str] | None) -> list[str]:
    """`base_url` as a list: none, one (a string is one URL, passed on as it is), or a
    pool's URLs, each a string and none twice."""
    if base_url is None:
        return []
    if isinstance(base_url, str):
        return [base_url]
    if not isinstance(base_url, Sequence):
        raise SettingsError(
            f"base_url must be a URL or a list of URLs, got {type(base_url).__name__}"
        )
    urls = list(base_url)
    if not urls:
        raise SettingsError("base_url is an empty list: give at least one URL")
    for url in urls:
        if not isinstance(url, str) or not url.strip():
            raise SettingsError(f"every base URL of a pool must be a URL, got {url!r}")
    seen: set[str] = set()
    for url in urls:
        norm = url.strip().rstrip("/")
        if norm in seen:
            raise SettingsError(
                f"base URL {redact_url(url)!r} is given twice: give each replica once"
            )
        seen.add(norm)
    return urls


class Endpoint:
    """One replica: its provider, its connection's limiter and its health.

    It is what a pool slot hands to `Model` to call (`complete`), so the server's
    rate-limit headers pause this endpoint only.
    """

    def __init__(self, provider: Provider, limiter: ConnectionLimiter, index: int) -> None:
        self.provider = provider
        self.limiter = limiter
        self.index = index
        self.calls = 0  # calls sent to it (attempts), for tests and logs
        self.down_until: float | None = None  # None: in the pool; else its next probe
        self.failures = 0  # failed probes in a row, plus one (the backoff's exponent)
        self.errors_5xx = 0  # 5xx answers in a row
        self.back = asyncio.Event()  # set while it is in the pool
        self.back.set()
        self.window_seen = limiter.concurrency  # its window when the pool was last sized

    @property
    def name(self) -> str:
        return self.limiter.name

    async def complete(self, request: Request) -> Completion:
        completion = await self.provider.complete(request)
        self.limiter.on_success(completion.rate_limit)  # its headers pause it, not the pool
        return completion


class PoolProvider(Provider):
    """The provider a pooled `Model` shows: the replicas' model under one identity.

    Its cache identity leaves the URLs out (see `pool_identity`); the engine never calls
    its `complete` (a pool slot names the endpoint), which, if called directly, simply
    goes to the endpoints in turn.
    """

    def __init__(self, endpoints: Sequence[Provider]) -> None:
        first = endpoints[0]
        if not all(isinstance(p, HttpProvider) for p in endpoints):
            raise ConfigurationError(
                f"{first.spec} runs in this process: a list of base URLs (a pool) is only "
                "for models served over HTTP"
            )
        super().__init__(first.model)
        self.name = first.name
        self.endpoints = tuple(endpoints)
        self._next = 0

    async def complete(self, request: Request) -> Completion:
        provider = self.endpoints[self._next % len(self.endpoints)]
        self._next += 1
        return await provider.complete(request)

    async def prepare(self) -> None:
        for provider in self.endpoints:
            await provider.prepare()

    def connection_key(self) -> str:
        return pool_key(self.endpoints)

    def cache_identity(self) -> dict[str, Any]:
        return pool_identity(self.endpoints)

    @property
    def supports_n(self) -> bool:
        return all(p.supports_n for p in self.endpoints)

    async def aclose(self) -> None:
        for provider in self.endpoints:
            await provider.aclose()


def pool_key(providers: Sequence[Provider]) -> str:
    """The pool's own connection key (its model-wide rates): its endpoints', in order."""
    return "pool[" + ",".join(p.connection_key() for p in providers) + "]"


def pool_identity(providers: Sequence[Provider]) -> dict[str, Any]:
    """The cache identity of a pool: what its replicas share, without any URL.

    Replicas serve the same weights under the same name (that is what a pool is), so which
    one answered, and which URLs the pool has, cannot change an answer: adding or removing
    a replica keeps the cache warm. `"base_url": "pool"` keeps pooled entries apart from
    those of the vendor's own server (whose identity has no base URL) and from those of a
    single URL (whose identity names it; a pool of one URL *is* a single URL, so its keys
    stay exactly as before).
    """
    identities = [
        {k: v for k, v in p.cache_identity().items() if k != "base_url"} for p in providers
    ]
    if any(i != identities[0] for i in identities[1:]):
        raise SettingsError("the endpoints of a pool must serve the same model with the same API")
    return {**identities[0], "base_url": "pool"}


class EndpointPool(ConnectionLimiter):
    """A model's limiter over several endpoints; see the module docstring.

    The inherited limiter is the pool's own: its semaphore is the pool's waiting line (sized
    by `_refresh`), its request and token rates are the model-wide ones. Its adaptive window
    is off: each endpoint's window adapts to that endpoint.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        limits: LimitConfig,
        *,
        name: str,
        policy: PoolPolicy | None = None,
        max_pause: float = DEFAULT_MAX_RETRY_AFTER_S,
        capacity: CapacitySource | None = None,
    ) -> None:
        if len(endpoints) < 2:
            raise ValueError("a pool needs at least two endpoints")
        total = min(CONCURRENCY.high, limits.max_concurrency * len(endpoints))
        super().__init__(
            LimitConfig(max_concurrency=total, rpm=limits.rpm, tpm=limits.tpm),
            name=name,
            max_pause=max_pause,
            capacity=capacity,  # a cluster-wide rate (engine.leases) is the pool's too
        )
        self.limits = limits  # as the user gave them (per endpoint window, model-wide rates)
        self.window = None
        self.adaptive = False
        self.endpoints = tuple(endpoints)
        self.policy = policy or PoolPolicy()
        self._failed_on: dict[ProviderError, Endpoint] = {}
        self._probes: set[asyncio.Task[None]] = set()
        self._closed = False
        self._routable: list[Endpoint] = list(self.endpoints)
        self._refresh()

    # -- what Model calls ------------------------------------------------------------------

    def slot(self, tokens: int = 0, priority: int = 1, flow: Hashable = None) -> _Slot:
        return _PoolSlot(self, tokens, priority, flow)

    def on_rate_limited(self, retry_after: float | None, fallback_s: float) -> None:
        """The endpoint that answered 429 was paused when its slot ended; the pool stops
        only when every endpoint is halted."""
        self._check_halted()

    def on_success(self, info: object) -> None:
        return None  # the endpoint that answered applied its headers (`Endpoint.complete`)

    def retry_delay(self, error: ProviderError, delay: float | None) -> float | None:
        """Retry at once when the failure took its endpoint out (or paused it) and another
        endpoint can take the call now; else as the retry policy says."""
        endpoint = self._failed_on.pop(error, None)
        if delay is None or endpoint is None or self._ready(endpoint):
            return delay
        if any(
            self._ready(e) and e.limiter.in_flight < e.limiter.concurrency for e in self.endpoints
        ):
            return 0.0
        return delay

    def _ready(self, e: Endpoint) -> bool:
        """In the pool and not pausing after a 429."""
        return self._usable(e) and e.limiter.paused_for() == 0.0

    @property
    def halted_for(self) -> float | None:
        halts = [e.limiter.halted_for for e in self.endpoints]
        if any(h is None for h in halts):
            return None
        return max(h for h in halts if h is not None)

    def _check_halted(self) -> None:
        halted = self.halted_for
        if halted is not None:
            raise ConnectionRateLimited(halted, self.name)

    # -- routing ---------------------------------------------------------------------------

    def _usable(self, e: Endpoint) -> bool:
        return e.down_until is None and e.limiter.halted_for is None

    def _outage(self) -> bool:
        """No endpoint is in the pool: route as if health were unknown (see the docstring)."""
        return not any(self._usable(e) for e in self.endpoints)

    def _refresh(self) -> None:
        """Size the waiting line: the windows of the usable endpoints (of every endpoint
        not halted, during an outage); and note which endpoints calls may go to."""
        live = [e for e in self.endpoints if e.limiter.halted_for is None]
        if not self._outage():
            live = [e for e in live if e.down_until is None]
        for e in self.endpoints:
            e.window_seen = e.limiter.concurrency
        self._routable = live
        self._sem.set_limit(max(1, sum(e.window_seen for e in live)))

    def _choose(self) -> Endpoint:
        """The endpoint for a call the pool just admitted: the least loaded relative to its
        window, among those with room and not pausing after a 429 first (on every call:
        kept to one pass without allocations)."""
        now = asyncio.get_running_loop().time()
        best: Endpoint | None = None
        best_rank = best_calls = 0.0
        for e in self._routable:
            limiter = e.limiter
            if limiter.halted_for is not None:
                continue
            held, window = limiter.in_flight, limiter.concurrency
            # room first (+4 when full), then not paused (+2), then the load in [0, 1]
            rank = held / window + (4.0 if held >= window else 0.0)
            if limiter._cooldown_until > now:
                rank += 2.0
            if best is None or rank < best_rank or (rank == best_rank and e.calls < best_calls):
                best, best_rank, best_calls = e, rank, e.calls
        if best is None:
            self._refresh()  # the last routable endpoint halted since the last refresh
            self._check_halted()
            return self._routable[0]
        return best

    # -- health ----------------------------------------------------------------------------

    def _ended(self, endpoint: Endpoint, exc: BaseException | None) -> None:
        """Learn from how a call on `endpoint` ended; then resize the waiting line."""
        if exc is None:
            endpoint.errors_5xx = 0
            if endpoint.down_until is not None:
                self._back_in(endpoint)  # during an outage, a call got through
            elif endpoint.limiter.concurrency == endpoint.window_seen:
                return  # the common case: nothing changed
        elif isinstance(exc, ProviderError) and exc.retryable:
            if len(self._failed_on) >= _MAX_REMEMBERED:
                self._failed_on.clear()  # a caller that never asks `retry_delay`: forget
            self._failed_on[exc] = endpoint
            if isinstance(exc, RateLimitError):
                try:  # a bare 429 pauses the endpoint as long as a first probe waits
                    endpoint.limiter.on_rate_limited(exc.retry_after, self.policy.down_base_s)
                except ConnectionRateLimited:
                    log.info("%s: halted; the pool goes on without it", endpoint.name)
            elif exc.status is None or exc.status >= 500:
                if exc.status is not None:
                    endpoint.errors_5xx += 1
                if exc.status is None or endpoint.errors_5xx >= self.policy.max_5xx:
                    self._take_out(endpoint, exc.message)
        self._refresh()

    def _take_out(self, endpoint: Endpoint, why: str) -> None:
        """Out of the pool until a probe (a background request, not a user's call) finds
        the server answering again."""
        endpoint.errors_5xx = 0
        if endpoint.down_until is not None:
            return  # already out: calls that were in flight report the same failure
        endpoint.back.clear()
        self._schedule_probe(endpoint)
        log.warning(
            "%s: taken out of the pool (%s); its calls go to the others until it answers",
            endpoint.name,
            why,
        )

    def _schedule_probe(self, endpoint: Endpoint) -> None:
        loop = asyncio.get_running_loop()
        endpoint.failures += 1
        wait = min(self.policy.down_max_s, self.policy.down_base_s * 2.0 ** (endpoint.failures - 1))
        endpoint.down_until = loop.time() + wait
        loop.call_at(endpoint.down_until, self._start_probe, endpoint)

    def _start_probe(self, endpoint: Endpoint) -> None:
        if self._closed or endpoint.down_until is None:
            return  # closed, or back in through a call that got through
        task = asyncio.get_running_loop().create_task(self._probe(endpoint))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _probe(self, endpoint: Endpoint) -> None:
        probe = getattr(endpoint.provider, "probe", None)
        ok = bool(await probe()) if probe is not None else True
        if endpoint.down_until is None or self._closed:
            return
        if ok:
            self._back_in(endpoint)
            self._refresh()
        else:
            log.debug("%s: still not answering", endpoint.name)
            self._schedule_probe(endpoint)

    def _back_in(self, endpoint: Endpoint) -> None:
        log.info("%s: answering again: back in the pool", endpoint.name)
        endpoint.down_until = None
        endpoint.failures = endpoint.errors_5xx = 0
        endpoint.back.set()

    async def aclose(self) -> None:
        """Stop probing (the engine closes its pools before the HTTP session)."""
        self._closed = True
        probes = list(self._probes)
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)


class _PoolSlot(_Slot):
    """One call admitted by the pool, then by its endpoint; the endpoint is what it yields."""

    __slots__ = ("_endpoint", "_inner")

    def __init__(self, pool: EndpointPool, tokens: int, priority: int, flow: Hashable) -> None:
        super().__init__(pool, tokens, priority, flow)
        self._endpoint: Endpoint | None = None
        self._inner: _Slot | None = None

    async def __aenter__(self) -> Endpoint:
        pool = self._limiter
        assert isinstance(pool, EndpointPool)
        await pool.acquire(self._tokens, self._priority, self._flow)
        try:
            endpoint = pool._choose()
            inner = endpoint.limiter.slot(0, self._priority, self._flow)
            await inner.__aenter__()
        except BaseException:
            pool.release()
            raise
        self._endpoint, self._inner = endpoint, inner
        endpoint.calls += 1
        return endpoint

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        pool = self._limiter
        assert isinstance(pool, EndpointPool) and self._inner is not None
        assert self._endpoint is not None
        await self._inner.__aexit__(exc_type, exc, tb)
        pool.release()
        pool._ended(self._endpoint, exc)
