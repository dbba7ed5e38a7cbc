"""Tests for the fake OpenAI server, over real loopback HTTP as the engine will use it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from opro.testing.fake_openai import (
    FAULT_KINDS,
    USAGE_FAULTS,
    FakeOpenAIServer,
    FakeServerConfig,
    default_responder,
    format_reset,
)

KEY = "sk-test-secret-123"


class Reply:
    """What the client saw: status, headers and raw body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as sess:
        yield sess


def chat_body(prompt: str = "hello world", **extra: Any) -> dict[str, Any]:
    messages = [
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": "an earlier question"},
        {"role": "assistant", "content": "an earlier answer"},
        {"role": "user", "content": prompt},
    ]
    return {"model": "gpt-test", "messages": messages, "temperature": 0.0, **extra}


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: Any,
    *,
    headers: dict[str, str] | None = None,
    client_timeout: aiohttp.ClientTimeout | None = None,
) -> Reply:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    async with session.post(url, data=data, headers=hdrs, timeout=client_timeout) as resp:
        return Reply(resp.status, dict(resp.headers), await resp.read())


async def chat(session: aiohttp.ClientSession, srv: FakeOpenAIServer, **kw: Any) -> Reply:
    prompt = kw.pop("prompt", "hello world")
    headers = kw.pop("headers", None)
    url = f"{srv.base_url}/chat/completions"
    return await post(session, url, chat_body(prompt, **kw), headers=headers)


async def until(cond: Callable[[], bool]) -> None:
    """Yield to the loop until cond holds; the server offers no event to await for this."""
    while not cond():  # noqa: ASYNC110 - polling a counter; pytest-timeout bounds it
        await asyncio.sleep(0.005)


def assert_error_body(reply: Reply, status: int, type_: str, code: str | None) -> None:
    assert reply.status == status
    assert reply.headers["Content-Type"].startswith("application/json")
    err = reply.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == type_
    assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]


# -- wire format ------------------------------------------------------------------------------


async def test_chat_shape_and_usage(
    server: FakeOpenAIServer, session: aiohttp.ClientSession
) -> None:
    prompt = "Q: is the sky green?\nA:"
    reply = await chat(session, server, prompt=prompt, max_tokens=16, seed=1, n=1)
    assert reply.status == 200
    data = reply.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "gpt-test"
    assert isinstance(data["id"], str) and isinstance(data["created"], int)
    answer = default_responder(prompt)
    assert answer in ("True", "False")
    assert data["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
    ]
    assert data["usage"] == {
        "prompt_tokens": len(prompt) // 4,
        "completion_tokens": 1,
        "total_tokens": len(prompt) // 4 + 1,
    }


async def test_completions_shape(server: FakeOpenAIServer, session: aiohttp.ClientSession) -> None:
    server.config.responder = lambda p: f"echo:{p}"
    body = {"model": "m", "prompt": "abcdefgh", "max_tokens": 10, "stop": ["\n"]}
    reply = await post(session, f"{server.base_url}/completions", body)
    assert reply.status == 200
    data = reply.json()
    assert data["object"] == "text_completion"
    assert data["choices"] == [
        {"index": 0, "text": "echo:abcdefgh", "finish_reason": "stop", "logprobs": None}
    ]
    assert data["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


async def test_chat_uses_last_user_message(
    server: FakeOpenAIServer, session: aiohttp.ClientSession
) -> None:
    server.config.responder = lambda p: p.upper()
    reply = await chat(session, server, prompt="final question")
    assert reply.json()["choices"][0]["message"]["content"] == "FINAL QUESTION"
    assert server.prompt_counts == {"final question": 1}


async def test_default_responder_is_pure() -> None:
    answers = {default_responder(f"prompt {i}") for i in range(64)}
    assert answers == {"True", "False"}
    assert all(default_responder(f"p{i}") == default_responder(f"p{i}") for i in range(16))


async def test_models(server: FakeOpenAIServer, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{server.base_url}/models") as resp:
        assert resp.status == 200
        data = orjson.loads(await resp.read())
    assert data["object"] == "list"
    assert data["data"][0]["id"] == "fake-model"
    assert data["data"][0]["object"] == "model"


async def test_n_and_ignore_n(server: FakeOpenAIServer, session: aiohttp.ClientSession) -> None:
    reply = await chat(session, server, n=3)
    choices = reply.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert len({c["message"]["content"] for c in choices}) == 1
    server.config.ignore_n = True
    reply = await chat(session, server, n=3)
    assert len(reply.json()["choices"]) == 1
    body = {"model": "m", "prompt": "x", "n": 4}
    reply = await post(session, f"{server.base_url}/completions", body)
    assert len(reply.json()["choices"]) == 1


@pytest.mark.parametrize(
    ("stop", "max_tokens", "text", "finish"),
    [
        ("\n", None, "line one", "stop"),
        (["two", "\n"], None, "line one", "stop"),
        (["one"], None, "line ", "stop"),
        (None, 1, "line", "length"),
        (None, 100, "line one\nline two", "stop"),
    ],
)
async def test_stop_and_max_tokens(
    server: FakeOpenAIServer,
    session: aiohttp.ClientSession,
    stop: str | list[str] | None,
    max_tokens: int | None,
    text: str,
    finish: str,
) -> None:
    server.config.responder = lambda p: "line one\nline two"
    reply = await chat(session, server, stop=stop, max_tokens=max_tokens)
    choice = reply.json()["choices"][0]
    assert choice["message"]["content"] == text
    assert choice["finish_reason"] == finish


async def test_bad_requests(server: FakeOpenAIServer, session: aiohttp.ClientSession) -> None:
    url = f"{server.base_url}/chat/completions"
    reply = await post(session, url, b'{"model": "m", "messages": [')
    assert_error_body(reply, 400, "invalid_request_error", None)
    reply = await post(session, url, {"model": "m"})
    assert_error_body(reply, 400, "invalid_request_error", None)
    assert reply.json()["error"]["param"] == "messages"
    reply = await post(session, url, chat_body(n=0))
    assert reply.json()["error"]["param"] == "n"
    reply = await post(session, f"{server.base_url}/completions", {"model": "m", "prompt": 3})
    assert reply.json()["error"]["param"] == "prompt"
    assert server.requests_total == 4
    assert server.accepted == 0
    assert server.errors_by_kind == {"bad_request": 4}


# -- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "type_", "code"),
    [
        ("500", 500, "server_error", None),
        ("502", 502, "server_error", None),
        ("503", 503, "server_error", None),
        ("400", 400, "invalid_request_error", None),
        ("401", 401, "invalid_request_error", "invalid_api_key"),
        ("429", 429, "requests", "rate_limit_exceeded"),
        ("429_bare", 429, "requests", "rate_limit_exceeded"),
    ],
)
async def test_status_faults(
    server: FakeOpenAIServer,
    session: aiohttp.ClientSession,
    kind: str,
    status: int,
    type_: str,
    code: str | None,
) -> None:
    server.config.retry_after_s = 2.5
    server.inject(kind)
    reply = await chat(session, server)
    assert_error_body(reply, status, type_, code)
    if kind == "429":
        assert reply.headers["Retry-After"] == "3"
        assert reply.headers["retry-after-ms"] == "2500"
    else:
        assert "Retry-After" not in reply.headers
        assert "retry-after-ms" not in reply.headers
    assert server.errors_by_kind == {kind: 1}
    assert server.n429 == (1 if status == 429 else 0)
    assert server.accepted == 0
    # The script is consumed: the next request succeeds.
    assert (await chat(session, server)).status == 200
    assert server.accepted == 1


async def test_inject_count_is_fifo(
    server: FakeOpenAIServer, session: aiohttp.ClientSession
) -> None:
    server.inject("503", count=2)
    server.inject("500")
    statuses = [(await chat(session, server)).status for _ in range(4)]
    assert statuses == [503, 503, 500, 200]


async def test_truncated(server: FakeOpenAIServer, session: aiohttp.ClientSession) -> None:
    server.inject("truncated")
    reply = await chat(session, server)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    with pytest.raises(orjson.JSONDecodeError):
        reply.json()
    assert server.accepted == 0
    assert server.errors_by_kind == {"truncated": 1}


async def test_drop(server: FakeOpenAIServer, session: aiohttp.ClientSession) -> None:
    server.inject("drop")
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await chat(session, server)
    assert (await chat(session, server)).status == 200
    assert server.errors_by_kind == {"drop": 1}
    assert server.accepted == 1


async def test_hang_times_out_and_server_still_stops(session: aiohttp.ClientSession) -> None:
    srv = FakeOpenAIServer()
    await srv.start()
    srv.inject("hang")
    url = f"{srv.base_url}/chat/completions"
    with pytest.raises(asyncio.TimeoutError):
        await post(session, url, chat_body(), client_timeout=aiohttp.ClientTimeout(total=0.2))
    assert srv.in_flight == 1
    assert (await post(session, url, chat_body())).status == 200
    await srv.stop()
    assert srv.in_flight == 0
    assert srv.errors_by_kind == {"hang": 1}
    assert srv.accepted == 1


async def test_stop_releases_pending_hangs(session: aiohttp.ClientSession) -> None:
    srv = FakeOpenAIServer()
    await srv.start()
    srv.inject("hang", count=3)
    url = f"{srv.base_url}/chat/completions"
    tasks = [asyncio.create_task(post(session, url, chat_body(f"p{i}"))) for i in range(3)]
    await until(lambda: srv.in_flight == 3)
    assert srv.max_in_flight == 3
    await srv.stop()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, aiohttp.ClientConnectionError) for r in results)
    assert srv.in_flight == 0


@pytest.mark.parametrize("chat_endpoint", [True, False])
async def test_malformed_choices(
    server: FakeOpenAIServer, session: aiohttp.ClientSession, chat_endpoint: bool
) -> None:
    if chat_endpoint:
        url, body = f"{server.base_url}/chat/completions", chat_body()
    else:
        url, body = f"{server.base_url}/completions", {"model": "m", "prompt": "x"}
    server.inject("empty_choices")
    server.inject("missing_fields")
    empty = await post(session, url, body)
    assert empty.status == 200
    assert empty.json()["choices"] == []
    missing = await post(session, url, body)
    assert missing.status == 200
    (choice,) = missing.json()["choices"]
    assert "message" not in choice and "text" not in choice
    assert server.accepted == 0
    assert server.prompt_counts == {}
    assert server.errors_by_kind == {"empty_choices": 1, "missing_fields": 1}


async def test_every_fault_kind_is_covered() -> None:
    assert {
        "500",
        "502",
        "503",
        "429",
        "429_bare",
        "401",
        "400",
        "truncated",
        "drop",
        "hang",
        "empty_choices",
        "missing_fields",
    } | USAGE_FAULTS == FAULT_KINDS
    with pytest.raises(ValueError, match="unknown fault kind"):
        FakeOpenAIServer().inject("teapot")
    with pytest.raises(ValueError, match="unknown fault kinds"):
        await FakeOpenAIServer(FakeServerConfig(fault_rates={"teapot": 0.5})).start()


async def test_fault_rates_are_seeded(session: aiohttp.ClientSession) -> None:
    async def pattern(seed: int) -> list[int]:
        config = FakeServerConfig(seed=seed, fault_rates={"500": 0.3, "503": 0.2})
        async with FakeOpenAIServer(config) as srv:
            return [(await chat(session, srv, prompt=f"p{i}")).status for i in range(40)]

    first = await pattern(7)
    assert first == await pattern(7)
    assert {200, 500, 503} == set(first)


async def test_fault_rate_one_always_fails(
    server: FakeOpenAIServer, session: aiohttp.ClientSession
) -> None:
    server.config.fault_rates = {"502": 1.0}
    assert [(await chat(session, server)).status for _ in range(3)] == [502, 502, 502]
    server.config.fault_rates = {}
    assert (await chat(session, server)).status == 200


# -- rate limit -------------------------------------------------------------------------------


async def test_rpm_token_bucket(session: aiohttp.ClientSession) -> None:
    now = [100.0]
    srv = FakeOpenAIServer(FakeServerConfig(rpm=120), clock=lambda: now[0])
    async with srv:
        first, second, third = [await chat(session, srv) for _ in range(3)]
        assert [first.status, second.status, third.status] == [200, 200, 429]
        assert first.headers["x-ratelimit-limit-requests"] == "120"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert first.headers["x-ratelimit-reset-requests"] == "500ms"
        assert second.headers["x-ratelimit-remaining-requests"] == "0"
        assert second.headers["x-ratelimit-reset-requests"] == "1s"
        assert_error_body(third, 429, "requests", "rate_limit_exceeded")
        assert third.headers["Retry-After"] == "1"
        assert third.headers["retry-after-ms"] == "500"
        assert third.headers["x-ratelimit-remaining-requests"] == "0"
        assert srv.accepted == 2 and srv.n429 == 1
        assert srv.errors_by_kind == {"rate_limit": 1}

        now[0] += 0.25  # half a token: still limited, 250 ms to go
        fourth = await chat(session, srv)
        assert fourth.status == 429
        assert fourth.headers["retry-after-ms"] == "250"

        now[0] += 0.25
        assert (await chat(session, srv)).status == 200
        now[0] += 60.0  # refill is capped at capacity
        statuses = [(await chat(session, srv)).status for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert srv.requests_total == 8 and srv.accepted == 5 and srv.n429 == 3


async def test_rpm_slow_limit_retry_after(session: aiohttp.ClientSession) -> None:
    now = [0.0]
    srv = FakeOpenAIServer(FakeServerConfig(rpm=6), clock=lambda: now[0])
    async with srv:
        assert (await chat(session, srv)).status == 200
        reply = await chat(session, srv)
        assert reply.status == 429
        assert reply.headers["Retry-After"] == "10"
        assert reply.headers["retry-after-ms"] == "10000"
        assert reply.headers["x-ratelimit-reset-requests"] == "10s"
        srv.config.rpm = None  # mutable config: the limit is lifted at once
        reply = await chat(session, srv)
        assert reply.status == 200
        assert "x-ratelimit-limit-requests" not in reply.headers


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0s"), (0.02, "20ms"), (1.0, "1s"), (8.64, "8.64s"), (360.0, "6m0s"), (3725, "1h2m5s")],
)
def test_format_reset(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


# -- bookkeeping ------------------------------------------------------------------------------


async def test_prompt_and_attempt_counts(
    server: FakeOpenAIServer, session: aiohttp.ClientSession
) -> None:
    server.inject("500")
    server.inject("drop")
    assert (await chat(session, server, prompt="a")).status == 500
    with pytest.raises(aiohttp.ClientConnectionError):
        await chat(session, server, prompt="a")
    assert (await chat(session, server, prompt="a")).status == 200
    assert (await chat(session, server, prompt="b")).status == 200
    assert server.attempt_counts == {"a": 3, "b": 1}
    assert server.prompt_counts == {"a": 1, "b": 1}
    assert server.requests_total == 4 and server.accepted == 2
    stats = server.stats()
    assert "prompt_counts" not in stats
    assert stats["max_answers_per_prompt"] == 1
    assert server.stats(prompts=True)["attempt_counts"] == {"a": 3, "b": 1}
    server.reset_stats()
    assert server.stats()["requests_total"] == 0
    assert server.attempt_counts == {} and server.prompt_counts == {}


async def test_latencies_are_seeded_samples(session: aiohttp.ClientSession) -> None:
    async def run() -> list[float]:
        config = FakeServerConfig(latency_s=0.02, jitter_s=0.01, seed=3)
        async with FakeOpenAIServer(config) as srv:
            for i in range(5):
                assert (await chat(session, srv, prompt=f"p{i}")).status == 200
            return srv.latencies

    latencies = await run()
    assert len(latencies) == 5
    assert all(0.01 <= x <= 0.03 for x in latencies)
    assert latencies == await run()


async def test_api_key_required_and_never_echoed(
    server: FakeOpenAIServer, session: aiohttp.ClientSession
) -> None:
    server.config.require_api_key = KEY
    bodies: list[bytes] = []
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        reply = await chat(session, server, headers=headers)
        assert_error_body(reply, 401, "invalid_request_error", "invalid_api_key")
        bodies.append(reply.body)
    async with session.get(f"{server.base_url}/models") as resp:
        assert resp.status == 401
        bodies.append(await resp.read())
    good = {"Authorization": f"Bearer {KEY}"}
    reply = await chat(session, server, headers=good)
    assert reply.status == 200
    bodies.append(reply.body)
    async with session.get(f"{server.base_url}/models", headers=good) as resp:
        assert resp.status == 200
        bodies.append(await resp.read())
    assert all(KEY.encode() not in b and b"wrong" not in b for b in bodies)
    assert server.errors_by_kind == {"auth": 3}
    assert KEY not in repr(server.stats(prompts=True))


async def test_stats_endpoints(server: FakeOpenAIServer, session: aiohttp.ClientSession) -> None:
    assert (await chat(session, server, prompt="x")).status == 200
    root = server.base_url.removesuffix("/v1")
    async with session.get(f"{root}/stats") as resp:
        stats = orjson.loads(await resp.read())
    assert stats["requests_total"] == 1 and stats["accepted"] == 1
    assert stats["latencies"] == [0.0] and stats["max_in_flight"] == 1
    assert "prompt_counts" not in stats
    async with session.get(f"{root}/stats", params={"prompts": "1"}) as resp:
        assert orjson.loads(await resp.read())["prompt_counts"] == {"x": 1}
    async with session.post(f"{root}/stats/reset") as resp:
        assert resp.status == 200
    assert server.requests_total == 0 and server.latencies == []


async def test_subprocess_mode(session: aiohttp.ClientSession) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "opro.testing.fake_openai",
        *("--port", "0", "--latency", "0.01", "--jitter", "0.005", "--rpm", "3000"),
        *("--seed", "0"),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        line = (await proc.stdout.readline()).decode().strip()
        assert line.startswith("READY http://127.0.0.1:")
        base_url = line.removeprefix("READY ")
        assert base_url.endswith("/v1")
        reply = await post(session, f"{base_url}/chat/completions", chat_body("sub"))
        assert reply.status == 200
        assert reply.headers["x-ratelimit-limit-requests"] == "3000"
        answer = reply.json()["choices"][0]["message"]["content"]
        assert answer == default_responder("sub")
        async with session.get(f"{base_url.removesuffix('/v1')}/stats") as resp:
            stats = orjson.loads(await resp.read())
        assert stats["accepted"] == 1 and stats["max_in_flight"] == 1
        assert len(stats["latencies"]) == 1
        assert 0.005 <= stats["latencies"][0] <= 0.015
    finally:
        if proc.returncode is None:
            proc.terminate()
        rest, _ = await proc.communicate()
    assert proc.returncode == 0
    assert rest == b""


async def test_requests_beyond_the_concurrency_limit_get_an_immediate_429(
    session: aiohttp.ClientSession,
) -> None:
    config = FakeServerConfig(latency_s=60.0, max_concurrency=2, retry_after_s=0.25)
    async with FakeOpenAIServer(config) as srv:
        url = f"{srv.base_url}/chat/completions"
        slow = [asyncio.create_task(post(session, url, chat_body(f"p{i}"))) for i in range(2)]
        await until(lambda: srv.in_flight == 2)
        refused = await post(session, url, chat_body("third"))
        assert refused.status == 429
        assert refused.headers["retry-after-ms"] == "250" and refused.headers["Retry-After"] == "1"
        assert srv.errors_by_kind == {"concurrency": 1} and srv.n429 == 1
        for task in slow:
            task.cancel()
        await asyncio.gather(*slow, return_exceptions=True)


async def test_injected_headers_ride_on_the_next_answers_and_inject_works_over_http(
    server: FakeOpenAIServer, session: aiohttp.ClientSession
) -> None:
    url = f"{server.base_url}/chat/completions"
    server.inject_headers({"x-ratelimit-reset-requests": "99999h"})
    first, second = [await post(session, url, chat_body()) for _ in range(2)]
    assert first.headers["x-ratelimit-reset-requests"] == "99999h"
    assert "x-ratelimit-reset-requests" not in second.headers
    root = server.base_url.rsplit("/v1", 1)[0]
    assert (await post(session, f"{root}/inject?kind=429&count=2", b"")).status == 200
    assert [(await post(session, url, chat_body())).status for _ in range(3)] == [429, 429, 200]
    assert (await post(session, f"{root}/inject?kind=nope", b"")).status == 400
    assert (await post(session, f"{root}/inject", {"headers": 3})).status == 400
