"""Limiter behaviour on virtual time: rates, concurrency, cooldowns and AIMD."""

from __future__ import annotations

import asyncio

import pytest

from opro.engine.limits import (
    AdjustableSemaphore,
    ConnectionLimiter,
    LimitConfig,
    throttle_window,
)
from opro.providers.types import RateLimitInfo
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


def test_aimd_halves_on_429_and_grows_back_additively() -> None:
    async def main() -> None:
        limiter = ConnectionLimiter(LimitConfig(max_concurrency=16))
        limiter.on_rate_limited(retry_after=0.0, fallback_s=0.0)
        assert limiter.concurrency == 8
        limiter.on_rate_limited(retry_after=0.0, fallback_s=0.0)
        assert limiter.concurrency == 4
        for _ in range(4):  # +1/window each: 4 -> 4.93, not yet a whole extra slot
            limiter.on_success(None)
        assert limiter.concurrency == 4
        limiter.on_success(None)
        assert limiter.concurrency == 5
        for _ in range(200):
            limiter.on_success(None)
        assert limiter.concurrency == 16

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
