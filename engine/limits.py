"""Per-connection limits: concurrency, requests/minute, tokens/minute, and 429 back-pressure.

One `ConnectionLimiter` exists per connection key (vendor + account, or a local server's
URL), shared by every model that talks to it. Acquiring a slot takes, in order:

1. a concurrency slot (an adjustable semaphore whose window adapts when the user gave no
   rate, so an unknown server is probed instead of hammered; see `ConnectionLimiter`),
   granted by priority, then round-robin across flows (the tasks of a sweep), so no task's
   backlog starves another's calls;
2. the connection's cooldown: after a 429 or an exhausted `x-ratelimit-remaining-*`
   header, nobody sends until the server's reset time. A pause longer than `max_pause`
   (the longest wait the retry policy allows one call) is a quota, not a burst: the
   connection then stops with `ConnectionRateLimited` instead of freezing every call on
   it for hours;
3. the request rate (asyncio-throttle's sliding window). asyncio-throttle finds a free
   slot by polling every `retry_interval`, and each wake-up costs ~0.1 ms of CPU here, so
   one waiter at a time goes to it, and only after sleeping until the moment the window
   frees a slot (we keep the window's send times too, so that moment is known);
4. the token rate (aiolimiter's leaky bucket, weighted by the request's worst case:
   estimated prompt tokens + max_tokens).

All waiting uses the event loop's clock, so tests can run it on virtual time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aiolimiter import AsyncLimiter
from asyncio_throttle.throttler import Throttler

from opro.checks import CONCURRENCY, REQUESTS_PER_MINUTE, TOKENS_PER_MINUTE
from opro.engine.aimd import AdaptiveWindow
from opro.engine.retry import DEFAULT_MAX_RETRY_AFTER_S
from opro.errors import OproError
from opro.providers.errors import ProviderError, RateLimitError
from opro.providers.types import Completion, RateLimitInfo, Request

if TYPE_CHECKING:
    from opro.engine.leases import CapacitySource

DEFAULT_MAX_CONCURRENCY = 32

log = logging.getLogger("opro.limits")


class Route(Protocol):
    """Where a slot's call goes, when the limiter decides it (an endpoint of a pool)."""

    async def complete(self, request: Request) -> Completion: ...


class ConnectionRateLimited(OproError):
    """The server asked a connection to pause for longer than the engine waits.

    Nothing more is sent on that connection; calls in flight finish (and are cached).
    """

    def __init__(self, seconds: float, connection: str) -> None:
        shown = f"{seconds:.0f}" if seconds < 1e9 else "more than 10^9"
        super().__init__(
            f"rate limited for {shown} s by {connection} (quota exhausted?); finished "
            "results are cached: rerun the same command once the limit has reset"
        )
        self.seconds = seconds
        self.connection = connection


@dataclass(frozen=True, slots=True)
class LimitConfig:
    """User-set limits for one connection; None means "not limited / adapt"."""

    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    rpm: float | None = None
    tpm: float | None = None

    def __post_init__(self) -> None:
        CONCURRENCY.check("max concurrency", self.max_concurrency)
        if self.rpm is not None:
            REQUESTS_PER_MINUTE.check("requests/minute", self.rpm)
        if self.tpm is not None:
            TOKENS_PER_MINUTE.check("tokens/minute", self.tpm)


class AdjustableSemaphore:
    """A semaphore whose limit can change while tasks hold or wait for it.

    Waiters are served by priority (lower first), so an optimizer's few calls are not
    queued behind thousands of scorer calls on the same connection. Within a priority they
    are served round-robin across flows (one grant per flow in turn, FIFO within a flow),
    so one flow's backlog (a sweep task with many pairs) cannot starve another flow: a
    flow that starts waiting is served within one round of the flows already waiting.
    Callers that give no flow share one flow, which is plain FIFO.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held = 0
        # priority -> flow -> its waiters; a lane's dict order is its round-robin order
        self._lanes: dict[int, dict[Hashable, deque[asyncio.Future[None]]]] = {}

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def held(self) -> int:
        return self._held

    def set_limit(self, limit: int) -> None:
        self._limit = max(1, limit)
        self._wake()

    async def acquire(self, priority: int = 0, flow: Hashable = None) -> None:
        if not self._lanes and self._held < self._limit:
            self._held += 1  # nobody waits: no future, no queue
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane = self._lanes.setdefault(priority, {})
        queue = lane.get(flow)
        if queue is None:
            queue = lane[flow] = deque()  # a new flow joins the end of the round
        queue.append(fut)
        self._wake()  # grants at once when there is room and nobody more urgent waits
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._held -= 1  # the slot was handed over just as we were cancelled
                self._wake()
            # otherwise the cancelled future stays queued and _next skips it
            raise

    def release(self) -> None:
        self._held -= 1
        self._wake()

    def _wake(self) -> None:
        while self._held < self._limit:
            fut = self._next()
            if fut is None:
                return
            self._held += 1
            fut.set_result(None)

    def _next(self) -> asyncio.Future[None] | None:
        """The next live waiter: most urgent priority, the flow whose turn it is."""
        while self._lanes:
            priority = min(self._lanes)
            lane = self._lanes[priority]
            flow = next(iter(lane))
            queue = lane[flow]
            fut = queue.popleft()
            if not queue:
                del lane[flow]
                if not lane:
                    del self._lanes[priority]
            elif not fut.done():
                lane[flow] = lane.pop(flow)  # served: to the end of the round
            if not fut.done():
                return fut
        return None


def throttle_window(rpm: float) -> tuple[int, float]:
    """A sliding window (count, seconds) for `rpm`: about one second's worth of requests.

    A whole minute's burst would be allowed by a 60 s window, and servers enforce limits on
    shorter scales (OpenAI documents per-second quantisation), so the window is as short as
    the rate allows while still holding an integer number of requests.
    """
    count = max(1, math.ceil(rpm / 60.0))
    return count, 60.0 * count / rpm


class ConnectionLimiter:
    """The limits of one connection key. Use `async with limiter.slot(tokens):`.

    Without a user-given rate the concurrency window adapts (`aimd.AdaptiveWindow`), told
    by each slot on exit how its call went (success, 429, or anything else: no signal).
    `on_rate_limited` and `on_success` carry the server's timing (Retry-After, reset
    headers), which pauses the whole connection.
    """

    # Fraction of the window added as a margin against arrival-time jitter at the server.
    RATE_MARGIN = 0.01

    def __init__(
        self,
        config: LimitConfig,
        *,
        name: str = "the server",
        max_pause: float = DEFAULT_MAX_RETRY_AFTER_S,
        capacity: CapacitySource | None = None,
    ) -> None:
        if not (math.isfinite(max_pause) and max_pause > 0):
            raise ValueError(f"max pause must be a number of seconds > 0, got {max_pause!r}")
        self.config = config
        self.name = name
        self.max_pause = max_pause
        self._halted_for: float | None = None  # a pause beyond max_pause was asked for
        self._halted = asyncio.Event()
        self._sem = AdjustableSemaphore(config.max_concurrency)
        self._cooldown_until = 0.0
        self._throttler: Throttler | None = None
        self._rate_gate = AdjustableSemaphore(1)  # a lock that honours priority
        self._sent: deque[float] = deque()
        # A cluster-wide share of the rate (`engine.leases`): it replaces the local rates.
        self.capacity = capacity
        if config.rpm is not None:
            count, period = throttle_window(config.rpm)
            self._period = period * (1 + self.RATE_MARGIN)
            self._throttler = Throttler(
                rate_limit=count, period=self._period, retry_interval=min(0.01, period / count)
            )
        self._tokens: AsyncLimiter | None = (
            AsyncLimiter(config.tpm, 60.0) if config.tpm is not None else None
        )
        self.adaptive = config.rpm is None
        self.window: AdaptiveWindow | None = (
            AdaptiveWindow(config.max_concurrency) if self.adaptive else None
        )

    @property
    def concurrency(self) -> int:
        return self._sem.limit

    @property
    def in_flight(self) -> int:
        return self._sem.held

    def slot(self, tokens: int = 0, priority: int = 1, flow: Hashable = None) -> _Slot:
        """One call's admission; `flow` names who it is for (a sweep task), so waiters of
        one priority are served round-robin across flows (see `AdjustableSemaphore`)."""
        return _Slot(self, tokens, priority, flow)

    @property
    def halted_for(self) -> float | None:
        """The pause beyond `max_pause` the server asked for (None: not halted)."""
        return self._halted_for

    def paused_for(self) -> float:
        """Seconds until the connection's cooldown ends (0 when it is not paused)."""
        return max(0.0, self._cooldown_until - asyncio.get_running_loop().time())

    def _check_halted(self) -> None:
        if self._halted_for is not None:
            raise ConnectionRateLimited(self._halted_for, self.name)

    async def acquire(self, tokens: int = 0, priority: int = 1, flow: Hashable = None) -> None:
        """Wait for every limit in turn; lower `priority` values are served first, and
        waiters of one priority round-robin across `flow`s.

        Raises `ConnectionRateLimited` once the connection is halted (see the module
        docstring), also to calls already waiting.
        """
        self._check_halted()
        await self._sem.acquire(priority, flow)
        try:
            loop = asyncio.get_running_loop()
            # A new 429 may push the deadline while we wait, so re-check after waking; a
            # halt wakes every waiter at once.
            while (wait := self._cooldown_until - loop.time()) > 0:
                self._check_halted()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._halted.wait()
            self._check_halted()
            if self.capacity is not None:
                await self._rate_gate.acquire(priority, flow)
                try:
                    await self.capacity.take(tokens if self._tokens is not None else 0)
                finally:
                    self._rate_gate.release()
                return
            if self._throttler is not None:
                await self._rate_gate.acquire(priority, flow)
                try:
                    await self._take_rate_slot(self._throttler)
                finally:
                    self._rate_gate.release()
            if self._tokens is not None and tokens > 0:
                await self._tokens.acquire(min(float(tokens), self._tokens.max_rate))
        except BaseException:
            self._sem.release()
            raise

    def release(self) -> None:
        self._sem.release()

    async def _take_rate_slot(self, throttler: Throttler) -> None:
        """Sleep until the window frees a slot, then let asyncio-throttle admit us."""
        loop = asyncio.get_running_loop()
        if len(self._sent) >= throttler.rate_limit:
            wait = self._sent[0] + self._period - loop.time()
            if wait > 0:
                await asyncio.sleep(wait + 1e-4)  # the throttler's test is strict (>)
        await throttler.acquire()  # type: ignore[no-untyped-call]
        self._sent.append(loop.time())
        while len(self._sent) > throttler.rate_limit:
            self._sent.popleft()

    def cool_down(self, seconds: float) -> None:
        """Hold every new request on this connection for `seconds` (at most `max_pause`)."""
        seconds = min(max(0.0, seconds), self.max_pause)  # max() maps NaN to 0
        until = asyncio.get_running_loop().time() + seconds
        self._cooldown_until = max(self._cooldown_until, until)

    def _pause(self, seconds: float, why: str) -> None:
        """Pause the connection as the server asked, or halt it if that is too long."""
        if not (math.isfinite(seconds) and seconds >= 0):
            log.info("%s: ignoring an unusable %s of %r s", self.name, why, seconds)
            return
        if seconds <= self.max_pause:
            # One line per pause at INFO: a burst of 429s extends the pause it started.
            fresh = self.paused_for() == 0.0 and seconds >= 1.0
            log.log(
                logging.INFO if fresh else logging.DEBUG,
                "%s: pausing every call %.2f s (%s)",
                self.name,
                seconds,
                why,
            )
            self.cool_down(seconds)
            return
        log.info(  # the error the calls get says it; no stray line on stderr
            "%s: %s asks for a %.0f s pause, longer than %.0f s: stopping",
            self.name,
            why,
            seconds,
            self.max_pause,
        )
        self._halted_for = max(self._halted_for or 0.0, seconds)
        self._halted.set()

    def on_rate_limited(self, retry_after: float | None, fallback_s: float) -> None:
        """A 429 arrived: pause the connection for as long as the server asked.

        Raises `ConnectionRateLimited` when that is longer than `max_pause`.
        """
        if retry_after is None:
            self._pause(fallback_s, "backoff after a 429")
        else:
            self._pause(retry_after, "Retry-After")
        self._check_halted()

    def on_success(self, info: RateLimitInfo | None) -> None:
        """A call succeeded: obey the server's rate-limit headers.

        A reset longer than `max_pause` halts the connection for the calls after this one.
        """
        if info is None:
            return
        if info.remaining_requests == 0 and info.reset_requests_s:
            self._pause(info.reset_requests_s, "x-ratelimit-reset-requests")
        if info.remaining_tokens == 0 and info.reset_tokens_s:
            self._pause(info.reset_tokens_s, "x-ratelimit-reset-tokens")

    def retry_delay(self, error: ProviderError, delay: float | None) -> float | None:
        """The wait before retrying after `error`, given the retry policy's `delay` (None:
        give up). One connection has nowhere else to send: the policy's answer stands (an
        `engine.pool.EndpointPool` retries at once on another endpoint)."""
        return delay

    def _finished(self, episode: int | None, exc: BaseException | None) -> None:
        """A slot's call ended: let the adaptive window learn from it."""
        window = self.window
        if window is None or episode is None:
            return
        before = window.limit
        if exc is None:
            changed = window.succeeded(episode)
            if changed:
                log.debug("%s: concurrency window %d -> %d", self.name, before, window.limit)
        elif isinstance(exc, RateLimitError):
            changed = window.rate_limited(episode)
            if changed:
                log.info(
                    "%s: rate limited: concurrency window %d -> %d (cut %d; it grows back "
                    "by round trips)",
                    self.name,
                    before,
                    window.limit,
                    window.episode,
                )
        else:
            return  # timeouts and server errors say nothing about our rate
        if changed:
            self._sem.set_limit(window.limit)


class _Slot:
    """One admitted call; on exit it tells the limiter how the call went."""

    __slots__ = ("_episode", "_flow", "_limiter", "_priority", "_tokens")

    def __init__(
        self, limiter: ConnectionLimiter, tokens: int, priority: int, flow: Hashable
    ) -> None:
        self._limiter = limiter
        self._tokens = tokens
        self._priority = priority
        self._flow = flow
        self._episode: int | None = None

    async def __aenter__(self) -> Route | None:
        """None: the call goes to the model's own provider."""
        limiter = self._limiter
        await limiter.acquire(self._tokens, self._priority, self._flow)
        if limiter.window is not None:
            self._episode = limiter.window.admit()
        return None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self._limiter.release()
        self._limiter._finished(self._episode, exc)
