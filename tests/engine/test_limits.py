"""Limiter behaviour on virtual time: rates, concurrency, cooldowns and the adaptive window."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from opro.engine.limits import (
    AdjustableSemaphore,
    ConnectionLimiter,
    ConnectionRateLimited,
    LimitConfig,
    throttle_window,
)
from opro.engine.model import Model, ModelCallError
from opro.engine.retry import RetryPolicy
from opro.errors import OproError
from opro.providers.base import Provider
from opro.providers.errors import RateLimitError, TransientError
from opro.providers.types import Completion, RateLimitInfo, Request, Usage
from opro.testing.virtual_time import run


def test_throttle_window_holds_about_a_second_of_requests() -> None:
    assert throttle_window(3000) == (50, 1.0)
    assert throttle_window(60) == (1, 1.0)
    count, period = throttle_window(10)
    assert (count, period) == (1, 6.0)
    count, period = throttle_window(90)
    assert count == 2 and period == pytest.approx(4 / 3)


def test_limit_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        LimitConfig(max_concurrency=0)
    with pytest.raises(ValueError, match="requests/minute"):
        LimitConfig(rpm=0)
    with pytest.raises(ValueError, match="tokens/minute"):
        LimitConfig(tpm=-5)


async def _send(
    limiter: ConnectionLimiter, n: int, tokens: int = 0, hold: float = 0.0
) -> list[float]:
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def one() -> None:
        async with limiter.slot(tokens):
            starts.append(loop.time())
            if hold:
                await asyncio.sleep(hold)

    await asyncio.gather(*(one() for _ in range(n)))
    return starts


@pytest.mark.usefixtures("throttle_on_loop_clock")
def test_rpm_never_exceeds_the_rate_in_any_window() -> None:
    limiter = ConnectionLimiter(LimitConfig(max_concurrency=64, rpm=600))  # 10/s
    starts = run(_send(limiter, 100, hold=0.05))
    starts.sort()
    # Any one-second window holds at most 10 starts ...
    for i in range(len(starts) - 10):
        assert starts[i + 10] - starts[i] >= 1.0
    # ... and the limiter does not leave much of the rate unused (1% margin + polling).
    assert starts[-1] <= 9 * 1.01 + 0.2


def test_concurrency_is_never_exceeded() -> None:
    limiter = ConnectionLimiter(LimitConfig(max_concurrency=3))
    peak = 0

    async def main() -> None:
        nonlocal peak

        async def one() -> None:
            nonlocal peak
            async with limiter.slot():
                peak = max(peak, limiter.in_flight)
                await asyncio.sleep(1)

        await asyncio.gather(*(one() for _ in range(10)))
        assert asyncio.get_running_loop().time() == pytest.approx(4.0)  # ceil(10/3) rounds

    run(main())
    assert peak == 3


def test_tpm_is_weighted_by_tokens() -> None:
    limiter = ConnectionLimiter(LimitConfig(max_concurrency=100, tpm=6000))  # 100 tokens/s
    starts = run(_send(limiter, 30, tokens=1000))
    # The bucket holds one minute (6000 tokens = 6 requests) at once, then 0.1 request/s.
    starts.sort()
    assert starts[5] == pytest.approx(0.0)
    assert starts[6] == pytest.approx(10.0, abs=0.01)
    assert starts[-1] == pytest.approx(240.0, abs=0.1)


def test_a_request_larger_than_tpm_is_admitted_alone() -> None:
    limiter = ConnectionLimiter(LimitConfig(tpm=100))
    starts = run(_send(limiter, 2, tokens=500))
    assert sorted(starts) == pytest.approx([0.0, 60.0], abs=0.01)


def test_cooldown_holds_every_new_request() -> None:
    limiter = ConnectionLimiter(LimitConfig(max_concurrency=8, rpm=None))

    async def main() -> list[float]:
        limiter.on_rate_limited(retry_after=2.5, fallback_s=1.0)
        return await _send(limiter, 4)

    assert run(main()) == pytest.approx([2.5] * 4)


class Server(Provider):
    """A server on virtual time, called through a `Model` as the engine calls providers:
    each call takes `latency`, and is refused with a 429 after 10 ms when more than `limit`
    calls are in flight or while a storm of `storm` refusals lasts."""

    name = "server"

    def __init__(self, latency: float, limit: int = 10**9, max_concurrency: int = 64) -> None:
        super().__init__("m")
        self.latency = latency
        self.limit = limit
        self.storm = 0
        self.in_flight = 0
        self.answered = 0
        self.refused = 0
        self.limiter = ConnectionLimiter(LimitConfig(max_concurrency=max_concurrency))
        # One attempt per call: the clients below send again themselves.
        self.caller = Model(
            self, limiter=self.limiter, retry=RetryPolicy(max_attempts=1), cache=None
        )
        self._sent = 0

    async def complete(self, request: Request) -> Completion:
        self.in_flight += 1
        try:
            if self.storm > 0 or self.in_flight > self.limit:
                self.storm = max(0, self.storm - 1)
                await asyncio.sleep(0.01)
                self.refused += 1
                raise RateLimitError("slow down", retry_after=0.0)
            await asyncio.sleep(self.latency)
            self.answered += 1
            return Completion(("ok",), Usage(1, 1))
        finally:
            self.in_flight -= 1

    async def client(self) -> None:
        while True:
            self._sent += 1
            with contextlib.suppress(ModelCallError):
                await self.caller.generate(self.caller.request(f"call {self._sent}"))

    @contextlib.asynccontextmanager
    async def clients(self, n: int) -> AsyncIterator[None]:
        """`n` clients calling in a loop; stopped however the test ends."""
        tasks = [asyncio.create_task(self.client()) for _ in range(n)]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def test_a_burst_of_429s_cuts_the_window_once_and_it_regrows_in_a_few_round_trips() -> None:
    async def main() -> list[int]:
        server = Server(latency=1.0)
        limiter = server.limiter
        async with server.clients(128):
            await asyncio.sleep(4.5)  # four round trips at the full window, no 429
            assert limiter.concurrency == 64
            server.storm = 32  # the next 32 calls (sent at t=5) get 429s at t=5.01
            await asyncio.sleep(1.0)
            assert server.refused == 32
            assert limiter.concurrency == 32  # cut once, not 32 times (that used to be 1)
            assert limiter.window is not None and limiter.window.episode == 1
            trace = []
            for _ in range(30):  # the window once per round trip, from the storm on
                trace.append(limiter.concurrency)
                await asyncio.sleep(1.0)
        return trace

    trace = run(main())
    # Halfway back per round trip to just below where it was cut, then a plateau, then 64.
    assert trace[:8] == [32, 47, 55, 59, 61, 62, 63, 63]
    assert next(i for i, w in enumerate(trace) if w >= 0.9 * 64) == 3
    assert trace[-1] == 64 and max(trace) == 64


def test_429s_before_anything_sent_after_the_cut_succeeded_do_not_cut_again() -> None:
    async def main() -> None:
        server = Server(latency=1.0, max_concurrency=16)
        limiter = server.limiter
        server.storm = 10**9  # the server refuses everything
        async with server.clients(32):
            await asyncio.sleep(3.0)
        assert server.refused > 200 and server.answered == 0
        assert limiter.concurrency == 8  # one cut: nothing showed the new window too large

    run(main())


def test_the_window_settles_just_below_a_servers_concurrency_limit() -> None:
    async def main() -> None:
        server = Server(latency=0.5, limit=20)
        limiter = server.limiter
        windows = []
        async with server.clients(100):
            await asyncio.sleep(5.0)
            refused, answered = server.refused, server.answered
            for _ in range(100):  # 50 s, 100 round trips
                windows.append(limiter.concurrency)
                await asyncio.sleep(0.5)
        # At the limit most of the time, probing it rarely: few 429s, no collapse.
        assert min(windows) >= 10 and max(windows) <= 21
        assert sum(w >= 18 for w in windows) >= 80
        assert server.refused - refused <= 0.01 * (server.answered - answered)

    run(main())


def test_failures_other_than_429_neither_cut_nor_grow_the_window() -> None:
    async def main() -> None:
        limiter = ConnectionLimiter(LimitConfig(max_concurrency=8))
        for _ in range(20):
            with contextlib.suppress(TransientError):
                async with limiter.slot():
                    raise TransientError("503")
        assert limiter.concurrency == 8
        assert limiter.window is not None and limiter.window.episode == 0

    run(main())


def test_a_user_given_rate_is_not_adapted() -> None:
    async def main() -> None:
        limiter = ConnectionLimiter(LimitConfig(max_concurrency=16, rpm=6000))
        limiter.on_rate_limited(retry_after=0.1, fallback_s=0.0)
        assert limiter.concurrency == 16

    run(main())


def test_exhausted_rate_limit_headers_pause_the_connection() -> None:
    limiter = ConnectionLimiter(LimitConfig(max_concurrency=4))

    async def main() -> list[float]:
        limiter.on_success(RateLimitInfo(remaining_requests=0, reset_requests_s=3.0))
        limiter.on_success(RateLimitInfo(remaining_tokens=0, reset_tokens_s=5.0))
        limiter.on_success(RateLimitInfo(remaining_requests=7, reset_requests_s=60.0))
        return await _send(limiter, 2)

    assert run(main()) == pytest.approx([5.0, 5.0])


def test_adjustable_semaphore_is_fifo_and_survives_cancellation() -> None:
    async def main() -> list[int]:
        sem = AdjustableSemaphore(1)
        order: list[int] = []
        await sem.acquire()

        async def waiter(i: int) -> None:
            await sem.acquire()
            order.append(i)
            sem.release()

        tasks = [asyncio.create_task(waiter(i)) for i in range(4)]
        await asyncio.sleep(0)
        tasks[1].cancel()
        sem.release()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert sem.held == 0
        sem.set_limit(0)  # clamps to 1: a limiter never deadlocks itself
        assert sem.limit == 1
        return order

    assert run(main()) == [0, 2, 3]


def test_lower_priority_values_are_served_first() -> None:
    async def main() -> list[str]:
        limiter = ConnectionLimiter(LimitConfig(max_concurrency=1))
        order: list[str] = []

        async def call(name: str, priority: int) -> None:
            async with limiter.slot(priority=priority):
                order.append(name)
                await asyncio.sleep(1)

        scorer = [asyncio.create_task(call(f"s{i}", 1)) for i in range(4)]
        await asyncio.sleep(0)  # s0 holds the slot, s1..s3 queue
        optimizer = asyncio.create_task(call("opt", 0))
        await asyncio.gather(*scorer, optimizer)
        return order

    assert run(main()) == ["s0", "opt", "s1", "s2", "s3"]


@pytest.mark.usefixtures("throttle_on_loop_clock")
def test_priority_also_orders_the_rate_gate() -> None:
    async def main() -> list[str]:
        limiter = ConnectionLimiter(LimitConfig(max_concurrency=10, rpm=60))  # 1 per second
        order: list[str] = []

        async def call(name: str, priority: int) -> None:
            async with limiter.slot(priority=priority):
                order.append(name)

        scorer = [asyncio.create_task(call(f"s{i}", 1)) for i in range(3)]
        await asyncio.sleep(0)
        optimizer = asyncio.create_task(call("opt", 0))
        await asyncio.gather(*scorer, optimizer)
        return order

    # s1 already holds the gate (asleep until the window frees a slot) and is not
    # preempted, but the optimizer overtakes s2, which was queued before it.
    assert run(main()) == ["s0", "s1", "opt", "s2"]


def test_a_cancelled_waiter_never_blocks_later_ones() -> None:
    async def main() -> None:
        sem = AdjustableSemaphore(1)
        await sem.acquire()
        waiter = asyncio.create_task(sem.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        sem.release()
        await asyncio.wait_for(sem.acquire(), timeout=1)
        assert sem.held == 1

    run(main())


def test_a_pause_longer_than_the_cap_halts_the_connection_instead_of_freezing_it() -> None:
    async def main() -> None:
        limiter = ConnectionLimiter(LimitConfig(max_concurrency=4), name="srv", max_pause=600)
        limiter.on_rate_limited(retry_after=30.0, fallback_s=1.0)  # a burst: wait it out
        waiting = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(1.0)
        assert not waiting.done() and limiter.paused_for() == pytest.approx(29.0)
        with pytest.raises(ConnectionRateLimited, match=r"rate limited for 100000 s by srv"):
            limiter.on_rate_limited(retry_after=100000.0, fallback_s=1.0)
        # The waiter is told at once, not after 29 s (nor 100000 s); nothing new is sent.
        with pytest.raises(ConnectionRateLimited):
            await waiting
        assert asyncio.get_running_loop().time() == pytest.approx(1.0)
        assert limiter.paused_for() == pytest.approx(29.0)  # never extended to the long ask
        assert limiter.halted_for == 100000.0
        with pytest.raises(ConnectionRateLimited):
            await limiter.acquire()
        assert limiter.in_flight == 0

    run(main())


def test_a_long_reset_header_on_a_success_halts_the_calls_after_it() -> None:
    async def main() -> None:
        limiter = ConnectionLimiter(LimitConfig(), name="srv", max_pause=600)
        limiter.on_success(RateLimitInfo(remaining_requests=0, reset_requests_s=99999 * 3600.0))
        assert limiter.halted_for == 99999 * 3600.0 and limiter.paused_for() == 0.0
        with pytest.raises(ConnectionRateLimited, match="359996400 s by srv"):
            await limiter.acquire()
        assert isinstance(ConnectionRateLimited(1.0, "x"), OproError)  # the CLI's one-liners

    run(main())


@pytest.mark.parametrize("seconds", [float("nan"), -5.0, float("inf")])
def test_unusable_pauses_are_ignored(seconds: float) -> None:
    async def main() -> None:
        limiter = ConnectionLimiter(LimitConfig(), max_pause=600)
        limiter.on_rate_limited(retry_after=seconds, fallback_s=1.0)
        limiter.cool_down(seconds)
        assert limiter.halted_for is None and limiter.paused_for() <= 600
        await limiter.acquire()

    run(main())
