"""`anthropic/<model>` end to end: engine -> aiohttp -> the loopback fake Messages API."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

import opro
from opro.caches.memory import MemoryCache
from opro.engine.engine import Engine
from opro.providers.anthropic import (
    AnthropicProvider,
    classify_anthropic_error,
    parse_anthropic_rate_limits,
)
from opro.providers.base import HttpPool
from opro.providers.registry import create_provider
from opro.providers.types import Message, RateLimitInfo
from opro.testing.fake_anthropic import FakeAnthropicServer, FakeServerConfig, rfc3339

KEY = "sk-ant-SENTINEL-7c1e5b9d"  # must never show up in errors, logs or the cache
EXAMPLES = [opro.Example(f"Is {i} even?", "Yes" if i % 2 == 0 else "No") for i in range(20)]
TRUTH = {ex.input: ex.target for ex in EXAMPLES}
GOOD = "Answer with care."


def responder(prompt: str) -> str:
    """Right when the good instruction is in the prompt, always "Yes" otherwise."""
    question = next((q for q in TRUTH if q in prompt), None)
    if question is not None and GOOD in prompt:
        return f"The answer is {TRUTH[question]}."
    return "Yes"


class ExactGrader:
    version = "test-1"

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        return prediction.rstrip(".").rsplit(" ", 1)[-1] == example.target


@pytest.fixture
async def server() -> AsyncIterator[FakeAnthropicServer]:
    config = FakeServerConfig(responder=responder, require_api_key=KEY, retry_after_s=0.01)
    async with FakeAnthropicServer(config) as srv:
        yield srv


def engine_for(tmp_path: Path, max_attempts: int = 8) -> Engine:
    retry = opro.RetryPolicy(
        base_delay=0.001, max_delay=0.01, timeout=5.0, max_attempts=max_attempts
    )
    return Engine(cache_dir=tmp_path / "cache", retry=retry)


def claude(engine: Engine, server: FakeAnthropicServer, **kw: object) -> opro.Model:
    return engine.model("anthropic/claude-x", base_url=server.base_url, api_key=KEY, **kw)  # type: ignore[arg-type]


async def run_eval(
    engine: Engine, server: FakeAnthropicServer, **kw: object
) -> opro.InstructionScore:
    report = await engine.evaluate(
        [GOOD], EXAMPLES, claude(engine, server, **kw), grader=ExactGrader()
    )
    return report.instructions[0]


# -- request and response mapping -----------------------------------------------------------


async def test_request_shape_headers_system_and_stop(server: FakeAnthropicServer) -> None:
    async with Engine(cache=MemoryCache()) as engine:
        model = claude(engine, server)
        request = opro.Request(
            messages=(Message("system", "Be terse."), Message("user", "Is 2 even?")),
            temperature=0.5,
            max_tokens=64,
            stop=("\n\nQ:",),
            seed=7,  # Anthropic has no seed: it must not be sent (the fake rejects it)
        )
        gen = await model.generate(request)
    headers = {k.lower(): v for k, v in server.last_headers.items()}
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["content-type"] == "application/json"
    assert server.last_body == {
        "model": "claude-x",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Is 2 even?"}],
        "temperature": 0.5,
        "system": "Be terse.",
        "stop_sequences": ["\n\nQ:"],
    }
    assert gen.completion.text == "Yes" and gen.completion.finish_reasons == ("stop",)


async def test_usage_stop_sequences_and_length_map_to_completion(
    server: FakeAnthropicServer,
) -> None:
    server.config.responder = lambda prompt: "The answer is 42.\nQ: next" * 10
    async with Engine(cache=MemoryCache()) as engine:
        model = claude(engine, server)
        stopped = await model.generate(opro.Request(prompt="p" * 40, stop=("\nQ:",)))
        cut = await model.generate(opro.Request(prompt="p" * 40, max_tokens=2))
    assert stopped.completion.text == "The answer is 42."
    assert stopped.completion.finish_reasons == ("stop",)
    assert stopped.usage == opro.Usage(10, 4)  # the fake counts 4 characters per token
    assert cut.completion.text == "The answer is 42"[:8]
    assert cut.completion.finish_reasons == ("length",)


async def test_evaluate_scores_over_http(server: FakeAnthropicServer, tmp_path: Path) -> None:
    async with engine_for(tmp_path) as engine:
        report = await engine.evaluate(
            [GOOD, ""], EXAMPLES, claude(engine, server), grader=ExactGrader()
        )
    assert [s.accuracy for s in report.instructions] == [1.0, 0.5]
    assert server.requests_total == 40 and max(server.prompt_counts.values()) == 1
    assert report.totals.tokens_in > 0 and report.totals.tokens_out > 0


async def test_n_is_emulated_with_single_calls(server: FakeAnthropicServer) -> None:
    async with Engine(cache=MemoryCache()) as engine:
        model = claude(engine, server)
        assert model.provider.supports_n is False
        gen = await model.generate(opro.Request(prompt="Is 2 even?", temperature=1.0, n=3))
    assert len(gen.completion.texts) == 3
    assert server.requests_total == 3 and gen.calls == 3


async def test_rate_limit_headers_reach_the_completion(tmp_path: Path) -> None:
    config = FakeServerConfig(responder=responder, require_api_key=KEY, rpm=600)
    async with FakeAnthropicServer(config) as srv, Engine(cache=MemoryCache()) as engine:
        gen = await claude(engine, srv).generate(opro.Request(prompt="Is 2 even?"))
    info = gen.completion.rate_limit
    assert info is not None
    assert (info.limit_requests, info.remaining_requests) == (600, 9)
    assert info.reset_requests_s is not None and 0.0 <= info.reset_requests_s <= 1.5


# -- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["429", "429_bare", "529", "500", "503", "truncated", "drop", "empty_content"]
)
async def test_transient_failures_are_retried_and_never_graded(
    server: FakeAnthropicServer, tmp_path: Path, kind: str
) -> None:
    server.inject(kind, count=5)
    async with engine_for(tmp_path) as engine:
        score = await run_eval(engine, server)
    assert (score.accuracy, score.errors, score.n) == (1.0, 0, 20)
    assert server.requests_total == 25 and max(server.prompt_counts.values()) == 1
    assert server.errors_by_kind[kind] == 5


async def test_429_carries_the_servers_retry_after(
    server: FakeAnthropicServer, tmp_path: Path
) -> None:
    # How long the engine then waits is tested on virtual time in tests/engine/test_model.py.
    server.config.retry_after_s = 0.2
    server.inject("429")
    async with engine_for(tmp_path) as engine:
        model = claude(engine, server)
        with pytest.raises(opro.RateLimitError) as caught:
            await model.provider.complete(opro.Request(prompt="Is 2 even?"))
        assert caught.value.retry_after == pytest.approx(0.2)
        gen = await model.generate(opro.Request(prompt="Is 2 even?"))
    assert gen.n429 == 0 and gen.calls == 1


async def test_a_rejected_key_aborts_without_retries(tmp_path: Path) -> None:
    config = FakeServerConfig(responder=responder, require_api_key="sk-ant-right")
    async with FakeAnthropicServer(config) as srv, engine_for(tmp_path) as engine:
        model = claude(engine, srv, limits=opro.LimitConfig(max_concurrency=2))
        with pytest.raises(opro.EvaluationAborted, match="HTTP 401") as caught:
            await engine.evaluate([GOOD], EXAMPLES, model, grader=ExactGrader())
    assert KEY not in str(caught.value)
    assert srv.accepted == 0 and srv.requests_total <= 4


async def test_a_bad_request_is_one_pairs_error(
    server: FakeAnthropicServer, tmp_path: Path
) -> None:
    server.inject("400", count=3)
    async with engine_for(tmp_path) as engine:
        score = await run_eval(engine, server, limits=opro.LimitConfig(max_concurrency=1))
    assert (score.errors, score.correct, score.graded) == (3, 17, 17)
    assert server.requests_total == 20  # a 400 is not retried
    assert "HTTP 400" in score.error_messages[0]


async def test_the_servers_own_validation_errors_surface(server: FakeAnthropicServer) -> None:
    async with Engine(cache=MemoryCache()) as engine:
        model = claude(engine, server)
        with pytest.raises(opro.ModelCallError, match="temperature") as caught:
            await model.generate(opro.Request(prompt="hi", temperature=1.5))
    assert isinstance(caught.value.error, opro.BadRequestError)
    assert caught.value.attempts == 1


async def test_a_refusal_is_an_empty_answer_not_an_error(
    server: FakeAnthropicServer, tmp_path: Path
) -> None:
    server.inject("refusal")
    async with engine_for(tmp_path) as engine:
        score = await run_eval(engine, server, limits=opro.LimitConfig(max_concurrency=1))
    assert (score.errors, score.correct, server.requests_total) == (0, 19, 20)


async def test_the_key_never_reaches_errors_or_the_cache(
    server: FakeAnthropicServer, tmp_path: Path
) -> None:
    server.inject("429", count=2)
    server.inject("400", count=2)
    async with engine_for(tmp_path) as engine:
        model = claude(engine, server, limits=opro.LimitConfig(max_concurrency=1))
        score = await run_eval(engine, server, limits=opro.LimitConfig(max_concurrency=1))
        provider = model.provider
    assert score.errors == 2 and score.graded == 18
    assert KEY not in " ".join(score.error_messages)
    assert KEY not in provider.connection_key() and KEY not in repr(provider.cache_identity())
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert files and all(KEY.encode() not in p.read_bytes() for p in files)


async def test_a_key_echoed_by_the_server_is_scrubbed() -> None:
    async def echo(request: web.Request) -> web.Response:
        body = {"type": "error", "error": {"type": "authentication_error", "message": KEY}}
        return web.json_response(body, status=401)

    app = web.Application()
    app.router.add_post("/v1/messages", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    http = HttpPool()
    try:
        provider = AnthropicProvider(
            "claude-x", http=http, base_url=f"http://127.0.0.1:{port}", api_key=KEY
        )
        with pytest.raises(opro.AuthenticationError) as caught:
            await provider.complete(opro.Request(prompt="hi"))
    finally:
        await http.aclose()
        await runner.cleanup()
    assert KEY not in str(caught.value) and "***" in str(caught.value)


# -- configuration and pure helpers ---------------------------------------------------------


def test_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    with pytest.raises(opro.ConfigurationError, match="ANTHROPIC_API_KEY is not set"):
        create_provider("anthropic/claude-x")
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    default = create_provider("anthropic/claude-x")
    assert isinstance(default, AnthropicProvider)
    assert default.cache_identity() == {"model": "anthropic/claude-x"}
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://proxy.local/v1/")
    proxied = create_provider("anthropic/claude-x")
    assert isinstance(proxied, AnthropicProvider) and proxied.base_url == "http://proxy.local"
    assert proxied.cache_identity()["base_url"] == "http://proxy.local"
    assert proxied.connection_key() != default.connection_key()


def test_rate_limit_headers_are_parsed() -> None:
    now = 1_700_000_000.0
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": rfc3339(now + 12),
        "anthropic-ratelimit-input-tokens-limit": "40000",
        "anthropic-ratelimit-input-tokens-remaining": "39000",
        "anthropic-ratelimit-input-tokens-reset": rfc3339(now + 1),
        "anthropic-ratelimit-output-tokens-limit": "8000",
        "anthropic-ratelimit-output-tokens-remaining": "100",
        "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:13:50.5+00:00",
    }
    info = parse_anthropic_rate_limits(headers, now=now)
    # The output family is closest to exhaustion (100 / 8000), so it speaks for tokens.
    assert info == RateLimitInfo(50, 0, 12.0, 8000, 100, 30.5)
    assert parse_anthropic_rate_limits({}, now=now) is None
    past = {"anthropic-ratelimit-tokens-reset": rfc3339(now - 5)}
    assert parse_anthropic_rate_limits(past, now=now) == RateLimitInfo(reset_tokens_s=0.0)
    junk = {"anthropic-ratelimit-requests-reset": "soon", "anthropic-ratelimit-requests-limit": "x"}
    assert parse_anthropic_rate_limits(junk, now=now) is None


def error_body(type_: str, message: str = "nope", **extra: object) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": type_, "message": message, **extra}})


@pytest.mark.parametrize(
    ("status", "type_", "cls"),
    [
        (429, "rate_limit_error", opro.RateLimitError),
        (529, "overloaded_error", opro.TransientError),
        (500, "api_error", opro.TransientError),
        (401, "authentication_error", opro.AuthenticationError),
        (403, "permission_error", opro.AuthenticationError),
        (400, "invalid_request_error", opro.BadRequestError),
        (404, "not_found_error", opro.BadRequestError),
        (413, "request_too_large", opro.BadRequestError),
    ],
)
def test_error_classification(status: int, type_: str, cls: type) -> None:
    err = classify_anthropic_error(status, error_body(type_), {"retry-after": "3"}, where="m")
    assert type(err) is cls and err.status == status and "nope" in err.message
    if cls is opro.RateLimitError:
        assert isinstance(err, opro.RateLimitError) and err.retry_after == 3.0


def test_a_spend_limit_429_is_not_retried() -> None:
    body = error_body("rate_limit_error", details={"error_code": "enforced_spend_limit_reached"})
    err = classify_anthropic_error(429, body, {"retry-after": "3"}, where="m")
    assert type(err) is opro.FatalError


@pytest.mark.live
@pytest.mark.skipif(
    not os.environ.get("ANTHROPIC_API_KEY"),
    reason="live Anthropic test: ANTHROPIC_API_KEY is not set",
)
async def test_live_anthropic() -> None:
    name = os.environ.get("OPRO_LIVE_ANTHROPIC_MODEL", "claude-haiku-4-5")
    async with Engine(use_cache=False, retry=opro.RetryPolicy(timeout=60.0)) as engine:
        model = engine.model(f"anthropic/{name}", decoding=opro.Decoding(max_tokens=16))
        gen = await model.generate(model.request("Reply with exactly one word: pong"))
    assert "pong" in gen.completion.text.lower()
    assert gen.usage.input_tokens > 0 and gen.usage.output_tokens > 0


def test_absurd_rate_limit_counts_are_ignored() -> None:
    now = 1_700_000_000.0
    absurd = {
        "anthropic-ratelimit-requests-limit": "inf",  # used to raise OverflowError
        "anthropic-ratelimit-requests-remaining": "-3",
        "anthropic-ratelimit-tokens-remaining": "nan",
    }
    assert parse_anthropic_rate_limits(absurd, now=now) is None
