"""Endpoint pools: cache keys, URL checks, what is per endpoint and what is per model.

The routing and health behaviour under real failures is in
tests/integration/test_pool_http.py; here, the parts that need one loopback server at most.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import opro
from opro.caches.memory import MemoryCache
from opro.engine.engine import Engine
from opro.engine.limits import LimitConfig
from opro.engine.pool import Endpoint, EndpointPool, PoolPolicy, PoolProvider
from opro.errors import SettingsError
from opro.providers.errors import ConfigurationError
from opro.providers.types import Request
from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig

BASE = Request(prompt="Q: 1+1?\n\nA:", temperature=0.0, max_tokens=64, stop=("\n",), seed=None)
SPEC = "openai-compatible/m"
U1, U2, U3 = (f"http://127.0.0.1:{port}/v1" for port in (8001, 8002, 8003))
# The keys of the starting code, computed before pools existed: existing caches stay valid.
SINGLE_URL_KEY = "81c637e1a48cc16745a88583bee7205566e41a60cf9090a255c21c41a158f147"
VENDOR_KEY = "c525c9c9a0fb89c0e084cb4401b2611967b21fa2a9f2ab408b52a914d36d4f51"


async def test_single_url_keys_are_byte_identical_to_before() -> None:
    async with Engine(use_cache=False) as engine:
        assert engine.model(SPEC, base_url=U1).key(BASE) == SINGLE_URL_KEY
        assert engine.model(SPEC, base_url=[U1]).key(BASE) == SINGLE_URL_KEY  # a list of one
        assert engine.model("openai/gpt-x", api_key="k").key(BASE) == VENDOR_KEY


async def test_a_pool_key_does_not_depend_on_its_urls() -> None:
    async with Engine(use_cache=False) as engine:
        two = engine.model(SPEC, base_url=[U1, U2])
        three = engine.model(SPEC, base_url=[U3, U2, U1])
        assert isinstance(two.provider, PoolProvider)
        assert two.key(BASE) == three.key(BASE)  # adding a replica keeps the cache warm
        assert two.key(BASE) != SINGLE_URL_KEY  # a pool is not any one of its servers
        other_api = engine.model(SPEC, base_url=[U1, U2], api="completions")
        assert other_api.key(BASE) != two.key(BASE)
        assert "127.0.0.1" not in repr(two.provider.cache_identity())


@pytest.mark.parametrize(
    ("urls", "error"),
    [
        ([], "empty list"),
        ([U1, U1 + "/"], "given twice"),
        ([U1, 3], "must be a URL"),
        ([U1, ""], "must be a URL"),
    ],
)
async def test_bad_url_lists_are_one_line_errors(urls: list[object], error: str) -> None:
    async with Engine(use_cache=False) as engine:
        with pytest.raises(SettingsError, match=error):
            engine.model(SPEC, base_url=urls)  # type: ignore[arg-type]


async def test_credentials_are_refused_in_every_url_of_a_pool() -> None:
    async with Engine(use_cache=False) as engine:
        for urls in ([U1, "http://me:hunter22@127.0.0.1:9/v1"], ["http://me:hunter22@h/v1", U1]):
            with pytest.raises(ConfigurationError, match="contains credentials") as caught:
                engine.model(SPEC, base_url=urls)
            assert "hunter22" not in str(caught.value)
        # A key in a query string is masked wherever the pool is named.
        pool = engine.model(SPEC, base_url=[U1, "http://127.0.0.1:9/v1?api_key=sekrit99"])
        assert isinstance(pool.limiter, EndpointPool)
        assert "sekrit99" not in pool.limiter.name
        assert all("sekrit99" not in e.name for e in pool.limiter.endpoints)
        assert "sekrit99" not in repr(pool.provider.cache_identity())


async def test_in_process_models_cannot_be_pooled() -> None:
    async with Engine(use_cache=False) as engine:
        with pytest.raises(ConfigurationError, match="only for models served over HTTP"):
            engine.model("simulated/x", base_url=[U1, U2])


async def test_rates_are_the_models_and_windows_are_each_endpoints() -> None:
    limits = LimitConfig(max_concurrency=5, rpm=120, tpm=10_000)
    async with Engine(use_cache=False) as engine:
        model = engine.model(SPEC, base_url=[U1, U2, U3], limits=limits)
        pool = model.limiter
        assert isinstance(pool, EndpointPool)
        assert (pool.config.rpm, pool.config.tpm) == (120, 10_000)  # once, for the model
        assert pool.config.max_concurrency == 15 and pool.concurrency == 15
        for endpoint in pool.endpoints:
            assert endpoint.limiter.config == LimitConfig(max_concurrency=5)
            assert endpoint.limiter.window is not None  # adapts to its own server
        # The same URLs again: the same pool, so the rates are not doubled.
        assert engine.model(SPEC, base_url=[U1, U2, U3], limits=limits).limiter is pool
        with pytest.raises(ConfigurationError, match="other limits"):
            engine.model(SPEC, base_url=[U1, U2, U3], limits=LimitConfig(rpm=60))


def out(endpoint: Endpoint) -> bool:
    return endpoint.down_until is not None


@pytest.fixture
async def pair() -> AsyncIterator[tuple[FakeOpenAIServer, FakeOpenAIServer]]:
    config = FakeServerConfig(retry_after_s=30.0)
    async with FakeOpenAIServer(config) as a, FakeOpenAIServer(FakeServerConfig()) as b:
        yield a, b


async def test_a_429_pauses_its_endpoint_only_and_the_call_moves_on(
    pair: tuple[FakeOpenAIServer, FakeOpenAIServer],
) -> None:
    a, b = pair
    a.inject("429")  # Retry-After: 30 s
    retry = opro.RetryPolicy(base_delay=0.001, max_delay=0.01)
    async with Engine(cache=MemoryCache(), retry=retry) as engine:
        model = engine.model(SPEC, base_url=[a.base_url, b.base_url])
        pool = model.limiter
        assert isinstance(pool, EndpointPool)
        first = await model.generate(model.request("one"))
        # Sent to A (the first of two idle endpoints), refused, then answered by B without
        # waiting out A's pause, which is still running.
        assert (first.calls, first.n429) == (2, 1)
        assert (a.n429, b.accepted) == (1, 1)
        ep_a, ep_b = pool.endpoints
        assert ep_a.limiter.paused_for() > 20 and ep_b.limiter.paused_for() == 0
        assert ep_a.down_until is None  # a 429 is back-pressure, not a failure
        second = await model.generate(model.request("two"))
        assert second.calls == 1 and b.accepted == 2  # the paused endpoint is used last


async def test_a_hang_past_the_timeout_takes_its_endpoint_out_and_the_call_moves_on(
    pair: tuple[FakeOpenAIServer, FakeOpenAIServer],
) -> None:
    a, b = pair
    a.inject("hang")
    retry = opro.RetryPolicy(base_delay=0.001, max_delay=0.01, timeout=0.2)
    policy = PoolPolicy(down_base_s=600.0)  # no probe during the test
    async with Engine(cache=MemoryCache(), retry=retry) as engine:
        model = engine.model(SPEC, base_url=[a.base_url, b.base_url], pool=policy)
        pool = model.limiter
        assert isinstance(pool, EndpointPool)
        generation = await model.generate(model.request("one"))
        assert generation.calls == 2 and b.accepted == 1  # timed out on A, answered by B
        assert out(pool.endpoints[0]) and not out(pool.endpoints[1])
        assert pool.concurrency == pool.endpoints[1].limiter.concurrency  # B's window only


async def test_repeated_5xx_take_an_endpoint_out(
    pair: tuple[FakeOpenAIServer, FakeOpenAIServer],
) -> None:
    a, b = pair
    a.inject("500", 2)
    retry = opro.RetryPolicy(base_delay=0.001, max_delay=0.01)
    policy = PoolPolicy(max_5xx=2, down_base_s=600.0)
    async with Engine(cache=MemoryCache(), retry=retry) as engine:
        model = engine.model(SPEC, base_url=[a.base_url, b.base_url], pool=policy)
        pool = model.limiter
        assert isinstance(pool, EndpointPool)
        ep_a = pool.endpoints[0]
        # Force both calls onto A while it is the less used endpoint: one 500 each.
        one = await model.generate(model.request("one"))
        assert one.calls == 2 and not out(ep_a)  # one 500: still in
        ep_a.calls = 0  # make A the first choice again
        two = await model.generate(model.request("two"))
        assert two.calls == 2 and out(ep_a)  # two in a row: out
        for i in range(4):
            await model.generate(model.request(f"more {i}"))
        assert a.requests_total == 2  # nothing more went to A while it is out
        assert not ep_a.back.is_set()
