"""One request and token rate per connection for a whole cluster, handed out in leases.

`LeaseBucket` is the cluster's rate for one connection key (it lives in one Ray actor,
`cluster.actors.LimiterActor`): two token buckets, requests and tokens, filled at the
connection's rpm/60 and tpm/60 per second and holding at most a quarter of a second's
worth. `grant(requests, tokens)` waits until both hold the amounts asked, takes them and
returns them: grants are served first come, first served.

`LeaseSource` is a node's share (an `engine.leases.CapacitySource`): it holds the leases it
was granted and spends one request (and the call's tokens) per call, so a call normally
pays no round trip; when it holds less than half a lease it asks for the next one in the
background, before it runs out. A lease not spent within `LEASE_TTL_S` is dropped, never
returned, so capacity cannot pile up on an idle node and be spent later in a burst.

Why the sum over the cluster stays within the limit: everything sent in a window of T
seconds was granted in the T + TTL seconds before its end, and grants in any span S are
at most the bucket's capacity (a quarter second) plus S x rate; with TTL = 0.25 s that is
at most the rate over T + 0.5 s, half a second less than the server's own one-second
bucket allows: the rest is room for requests that reach the server bunched together
(a node that stalled, network jitter). A 1% margin is kept on the request rate too, as
the local limiter does.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opro.engine.limits import ConnectionLimiter, LimitConfig

BURST_S = 0.25  # the bucket holds this many seconds' worth of the rate
LEASE_S = 0.1  # a lease is this many seconds' worth of the whole cluster's rate
LEASE_TTL_S = 0.25  # an unspent lease is dropped after this long

# (requests, tokens) asked -> (requests, tokens) granted; the actor's `grant`, remotely.
Fetch = Callable[[int, int], Awaitable[tuple[int, int]]]


class _Bucket:
    def __init__(self, per_s: float, now: float) -> None:
        self.rate = per_s
        self.capacity = max(1.0, per_s * BURST_S)
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        deficit = amount - self.level
        # A deficit left by float rounding would be a sleep too short to move the clock.
        return deficit / self.rate if deficit > 1e-9 else 0.0


class LeaseBucket:
    """The cluster-wide rate of one connection (see the module docstring)."""

    def __init__(self, limits: LimitConfig) -> None:
        if limits.rpm is None and limits.tpm is None:
            raise ValueError("a lease bucket needs a requests/minute or tokens/minute limit")
        self.limits = limits
        self._requests: _Bucket | None = None
        self._tokens: _Bucket | None = None
        self._lock = asyncio.Lock()
        self.granted_requests = 0

    def _buckets(self, now: float) -> tuple[_Bucket | None, _Bucket | None]:
        if self._requests is None and self.limits.rpm is not None:
            per_s = self.limits.rpm / 60.0 / (1 + ConnectionLimiter.RATE_MARGIN)
            self._requests = _Bucket(per_s, now)
        if self._tokens is None and self.limits.tpm is not None:
            self._tokens = _Bucket(self.limits.tpm / 60.0, now)
        return self._requests, self._tokens

    def lease_size(self) -> tuple[int, int, int]:
        """The (requests, tokens) a node asks for at a time, and the most tokens one call
        may take (a bucket's capacity: a larger call is charged that much)."""
        rpm, tpm = self.limits.rpm, self.limits.tpm
        requests = max(1, math.floor(rpm / 60.0 * LEASE_S)) if rpm is not None else 1
        tokens = max(1, math.floor(tpm / 60.0 * LEASE_S)) if tpm is not None else 0
        cap = math.floor(max(1.0, tpm / 60.0 * BURST_S)) if tpm is not None else 0
        return requests, tokens, cap

    async def grant(self, requests: int, tokens: int) -> tuple[int, int]:
        """Wait until `requests` and `tokens` are free (each cut to a bucket's capacity),
        take them and return what was taken."""
        if not (isinstance(requests, int) and isinstance(tokens, int)):
            raise TypeError("a lease is a whole number of requests and of tokens")
        requests, tokens = max(0, requests), max(0, tokens)
        loop = asyncio.get_running_loop()
        async with self._lock:  # first come, first served
            r_bucket, t_bucket = self._buckets(loop.time())
            r = min(requests, math.floor(r_bucket.capacity)) if r_bucket else requests
            t = min(tokens, math.floor(t_bucket.capacity)) if t_bucket else tokens
            while True:
                now = loop.time()
                wait = 0.0
                if r_bucket is not None:
                    r_bucket.refill(now)
                    wait = max(wait, r_bucket.wait_for(r))
                if t_bucket is not None:
                    t_bucket.refill(now)
                    wait = max(wait, t_bucket.wait_for(t))
                if wait <= 0.0:
                    break
                await asyncio.sleep(wait)
            if r_bucket is not None:
                r_bucket.level -= r
            if t_bucket is not None:
                t_bucket.level -= t
            self.granted_requests += r
            return r, t


@dataclass(slots=True)
class _Lease:
    expires: float
    requests: int
    tokens: int


class LeaseSource:
    """A node's share of one connection's cluster-wide rate (see the module docstring)."""

    def __init__(
        self, fetch: Fetch, lease: tuple[int, int, int], *, ttl: float = LEASE_TTL_S
    ) -> None:
        self._fetch = fetch
        self._lease_requests, self._lease_tokens, self._max_tokens = lease
        # The calls this node sent in the last second: a lease is sized to what the node
        # spends in half a TTL, so it is used up before it expires on a node with a small
        # share of the cluster's rate (and at most `lease`, a tenth of the cluster's rate).
        self._recent: deque[float] = deque()
        self._started: float | None = None
        self._want = (self._lease_requests, self._lease_tokens)
        self._ttl = ttl
        self._held: deque[_Lease] = deque()
        self._refill: asyncio.Task[None] | None = None
        self.round_trips = 0  # calls that had to wait for a lease (none at hand)
        self.fetches = 0

    def _drop_expired(self, now: float) -> None:
        held = self._held
        while held and (held[0].expires <= now or (held[0].requests | held[0].tokens) == 0):
            held.popleft()

    def _holding(self) -> tuple[int, int]:
        return sum(x.requests for x in self._held), sum(x.tokens for x in self._held)

    async def take(self, tokens: int) -> None:
        tokens = min(tokens, self._max_tokens)  # no token rate: 0
        loop = asyncio.get_running_loop()
        waited = False
        while True:
            self._drop_expired(loop.time())
            requests_held, tokens_held = self._holding()
            if requests_held >= 1 and tokens_held >= tokens:
                self._spend(tokens)
                self._count(loop.time())
                want_requests, want_tokens = self._want
                if 2 * (requests_held - 1) < want_requests or (
                    want_tokens and 2 * (tokens_held - tokens) < want_tokens
                ):
                    self._start_refill(tokens)
                return
            if not waited:
                waited = True
                self.round_trips += 1
            await asyncio.shield(self._start_refill(tokens))

    def _count(self, now: float) -> None:
        if self._started is None:
            self._started = now
        self._recent.append(now)
        while self._recent[0] <= now - 1.0:
            self._recent.popleft()

    def _spend(self, tokens: int) -> None:
        for lease in self._held:  # from the oldest leases first: they expire first
            if lease.requests > 0:
                lease.requests -= 1
                break
        for lease in self._held:
            used = min(tokens, lease.tokens)
            lease.tokens -= used
            tokens -= used
            if tokens == 0:
                break

    def _start_refill(self, tokens: int) -> asyncio.Task[None]:
        if self._refill is None or self._refill.done():
            self._refill = asyncio.create_task(self._fetch_lease(tokens))
        return self._refill

    async def aclose(self) -> None:
        """Stop asking for leases (a refill under way is cancelled)."""
        refill, self._refill = self._refill, None
        if refill is not None and not refill.done():
            refill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refill

    async def _fetch_lease(self, tokens: int) -> None:
        want_requests, want_tokens = self._lease_requests, 0
        now = asyncio.get_running_loop().time()
        if self._started is not None and now - self._started >= 1.0:  # a second's history
            in_half_ttl = math.ceil(len(self._recent) * self._ttl / 2)
            want_requests = max(1, min(want_requests, in_half_ttl))
        if self._lease_tokens:
            # Whole calls' worth, and no more requests than those calls: what one rate
            # leaves unused of the other would only expire here, unused by other nodes.
            per_call = max(1, tokens)
            calls = min(want_requests, max(1, self._lease_tokens // per_call))
            want_requests, want_tokens = calls, max(tokens, calls * per_call)
        self._want = (want_requests, want_tokens)
        self.fetches += 1
        requests, got_tokens = await self._fetch(want_requests, want_tokens)
        loop = asyncio.get_running_loop()
        self._held.append(_Lease(loop.time() + self._ttl, requests, got_tokens))
