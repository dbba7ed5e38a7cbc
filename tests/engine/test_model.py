"""Model: cache, single-flight, retry and n-emulation against a scripted provider."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter

import pytest

from opro.caches.memory import MemoryCache
from opro.engine.limits import ConnectionLimiter, ConnectionRateLimited, LimitConfig
from opro.engine.model import Model, ModelCallError
from opro.engine.retry import RetryPolicy
from opro.providers.base import Provider
from opro.providers.errors import (
    AuthenticationError,
    ProviderError,
    RateLimitError,
    TransientError,
)
from opro.providers.types import Completion, Request, Usage
from opro.testing.virtual_time import run


class Scripted(Provider):
    """Fails with the scripted errors first, then answers; counts calls per prompt."""

    name = "scripted"

    def __init__(
        self,
        script: list[ProviderError] | None = None,
        *,
        n_supported: bool = True,
        gate: asyncio.Event | None = None,
        latency: float = 0.0,
    ) -> None:
        super().__init__("m")
        self.script = list(script or [])
        self.calls: Counter[str] = Counter()
        self.times: list[float] = []
        self.n_supported = n_supported
        self.gate = gate
        self.latency = latency

    @property
    def supports_n(self) -> bool:
        return self.n_supported

    async def complete(self, request: Request) -> Completion:
        self.calls[request.as_text()] += 1
        self.times.append(asyncio.get_running_loop().time())
        if self.gate is not None:
            await self.gate.wait()
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.script:
            raise self.script.pop(0)
        n = request.n if self.n_supported else 1
        return Completion(tuple(f"answer to {request.as_text()}" for _ in range(n)), Usage(10, 2))


def make(
    provider: Provider,
    *,
    cache: MemoryCache | None = None,
    retry: RetryPolicy | None = None,
    limits: LimitConfig | None = None,
) -> Model:
    return Model(
        provider,
        limiter=ConnectionLimiter(limits or LimitConfig()),
        retry=retry or RetryPolicy(base_delay=1.0, max_attempts=4),
        cache=cache,
        rng=random.Random(0),
    )


def test_a_cached_request_makes_no_call() -> None:
    provider = Scripted()
    model = make(provider, cache=MemoryCache())

    async def main() -> None:
        first = await model.generate(model.request("q"))
        second = await model.generate(model.request("q"))
        assert (first.cached, first.calls, first.usage) == (False, 1, Usage(10, 2))
        assert (second.cached, second.calls, second.usage) == (True, 0, Usage())
        assert second.completion.texts == first.completion.texts

    run(main())
    assert provider.calls == {"q": 1}


def test_identical_requests_in_flight_are_sent_once() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        provider = Scripted(gate=gate)
        model = make(provider)  # no cache: only single-flight can save the calls
        tasks = [asyncio.create_task(model.generate(model.request("q"))) for _ in range(5)]
        await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(*tasks)
        assert provider.calls == {"q": 1}
        assert [r.shared for r in results] == [False, True, True, True, True]
        assert sum(r.calls for r in results) == 1
        assert model.stats.shared == 4

    run(main())


def test_cancelling_one_waiter_does_not_cancel_the_shared_call() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        provider = Scripted(gate=gate)
        model = make(provider)
        leader = asyncio.create_task(model.generate(model.request("q")))
        follower = asyncio.create_task(model.generate(model.request("q")))
        await asyncio.sleep(0)
        leader.cancel()
        await asyncio.sleep(0)
        gate.set()
        result = await follower
        assert result.completion.text == "answer to q"
        assert leader.cancelled()

    run(main())


def test_a_caller_after_the_last_waiter_was_cancelled_gets_a_real_answer() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        provider = Scripted(gate=gate)
        model = make(provider)
        first = asyncio.create_task(model.generate(model.request("q")))
        await asyncio.sleep(0)
        first.cancel()  # the only waiter: its call is cancelled too
        with contextlib.suppress(asyncio.CancelledError):
            await first
        gate.set()
        # The cancelled call has not finished unwinding yet; this caller was never cancelled
        # and must not be handed that call's CancelledError.
        late = await model.generate(model.request("q"))
        assert late.completion.text == "answer to q"
        assert (late.shared, late.calls) == (False, 1)
        assert provider.calls == {"q": 2}

    run(main())


def test_every_waiter_of_a_failed_shared_call_gets_the_error_and_nothing_is_cached() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        cache = MemoryCache()
        provider = Scripted([AuthenticationError("bad key", status=401)], gate=gate)
        model = make(provider, cache=cache)
        tasks = [asyncio.create_task(model.generate(model.request("q"))) for _ in range(3)]
        await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, ModelCallError) for r in results)
        assert provider.calls == {"q": 1} and len(cache) == 0
        again = await model.generate(model.request("q"))  # a new call, not the old error
        assert again.completion.text == "answer to q" and provider.calls == {"q": 2}

    run(main())


def test_transient_errors_are_retried_with_backoff_then_succeed() -> None:
    provider = Scripted([TransientError("boom", status=503), TransientError("boom")])
    model = make(provider, retry=RetryPolicy(base_delay=1.0, max_attempts=4))
    gen = run(model.generate(model.request("q")))
    assert gen.calls == 3
    gaps = [b - a for a, b in zip(provider.times, provider.times[1:], strict=False)]
    # Equal jitter: the k-th backoff lies in [2**(k-1)/2, 2**(k-1)] seconds.
    assert 0.5 <= gaps[0] <= 1.0
    assert 1.0 <= gaps[1] <= 2.0


def test_429_waits_exactly_as_long_as_the_server_asked() -> None:
    provider = Scripted([RateLimitError("slow down", retry_after=7.0)])
    model = make(provider)
    gen = run(model.generate(model.request("q")))
    assert (gen.calls, gen.n429) == (2, 1)
    assert 7.0 <= provider.times[1] - provider.times[0] <= 7.05


def test_fatal_errors_fail_fast_and_are_never_cached() -> None:
    cache = MemoryCache()
    provider = Scripted([AuthenticationError("bad key", status=401)])
    model = make(provider, cache=cache)
    with pytest.raises(ModelCallError) as info:
        run(model.generate(model.request("q")))
    assert info.value.attempts == 1
    assert isinstance(info.value.error, AuthenticationError)
    assert len(cache) == 0


def test_retries_are_bounded_and_a_final_failure_is_not_cached() -> None:
    cache = MemoryCache()
    provider = Scripted([TransientError("down")] * 10)
    model = make(provider, cache=cache, retry=RetryPolicy(max_attempts=3, base_delay=0.1))
    with pytest.raises(ModelCallError, match="after 3 attempts"):
        run(model.generate(model.request("q")))
    assert provider.calls == {"q": 3}
    assert len(cache) == 0
    assert model.stats.failures == 1


def test_a_retry_after_longer_than_the_cap_stops_the_connection() -> None:
    provider = Scripted([RateLimitError("daily quota", retry_after=86400)])
    model = make(provider, retry=RetryPolicy(max_retry_after=600))

    async def main() -> None:
        with pytest.raises(ConnectionRateLimited, match="rate limited for 86400 s"):
            await model.generate(model.request("q"))
        assert model.limiter.paused_for() == 0.0  # not frozen for a day
        with pytest.raises(ConnectionRateLimited):  # and nothing else is sent on it
            await model.generate(model.request("other"))

    run(main())
    assert provider.calls == {"q": 1}


def test_a_hanging_call_times_out_as_a_transient_error() -> None:
    provider = Scripted(latency=1000.0)
    model = make(provider, retry=RetryPolicy(max_attempts=2, timeout=5.0, base_delay=0.1))
    with pytest.raises(ModelCallError, match="no answer within 5s"):
        run(model.generate(model.request("q")))
    assert provider.calls == {"q": 2}


@pytest.mark.parametrize("n_supported", [True, False])
def test_n_samples_are_emulated_when_the_server_ignores_n(n_supported: bool) -> None:
    provider = Scripted(n_supported=n_supported)
    model = make(provider)
    request = Request(prompt="q", temperature=1.0, n=4)
    gen = run(model.generate(request))
    assert len(gen.completion.texts) == 4
    assert provider.calls == {"q": 1 if n_supported else 4}
    assert gen.calls == provider.calls["q"]


def test_sampled_requests_are_cached_per_sample_index() -> None:
    provider = Scripted()
    model = make(provider, cache=MemoryCache())
    request = Request(prompt="q", temperature=1.0)

    async def main() -> None:
        for sample in (0, 1, 0, 1, 2):
            await model.generate(request, sample=sample)

    run(main())
    assert provider.calls == {"q": 3}


def test_limits_are_respected_across_retries() -> None:
    limiter_cfg = LimitConfig(max_concurrency=2)
    provider = Scripted(latency=1.0)
    model = make(provider, limits=limiter_cfg)
    peak = 0

    def watch(_: object) -> None:
        nonlocal peak
        peak = max(peak, model.limiter.in_flight)

    async def main() -> None:
        tasks = [asyncio.create_task(model.generate(model.request(f"q{i}"))) for i in range(6)]
        for t in tasks:
            t.add_done_callback(watch)
        await asyncio.gather(*tasks)
        assert asyncio.get_running_loop().time() == pytest.approx(3.0)

    run(main())
    assert peak <= 2
