"""`google/<model>` end to end: engine -> aiohttp -> the loopback fake Gemini API."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

import opro
from opro.caches.memory import MemoryCache
from opro.engine.engine import Engine
from opro.providers.base import HttpPool
from opro.providers.gemini import GeminiProvider, classify_gemini_error
from opro.providers.registry import create_provider
from opro.providers.types import Message
from opro.testing.fake_gemini import FakeGeminiServer, FakeServerConfig

KEY = "AIza-SENTINEL-3b8f0e2a"  # must never show up in errors, URLs or the cache
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
async def server() -> AsyncIterator[FakeGeminiServer]:
    config = FakeServerConfig(responder=responder, require_api_key=KEY, retry_after_s=0.01)
    async with FakeGeminiServer(config) as srv:
        yield srv


def engine_for(tmp_path: Path) -> Engine:
    retry = opro.RetryPolicy(base_delay=0.001, max_delay=0.01, timeout=5.0)
    return Engine(cache_dir=tmp_path / "cache", retry=retry)


def gemini(engine: Engine, server: FakeGeminiServer, **kw: object) -> opro.Model:
    return engine.model("google/gemini-x", base_url=server.base_url, api_key=KEY, **kw)  # type: ignore[arg-type]


async def run_eval(engine: Engine, server: FakeGeminiServer, **kw: object) -> opro.InstructionScore:
    model = gemini(engine, server, **kw)
    report = await engine.evaluate([GOOD], EXAMPLES, model, grader=ExactGrader())
    return report.instructions[0]


# -- request and response mapping -----------------------------------------------------------


async def test_request_shape_key_header_roles_and_config(server: FakeGeminiServer) -> None:
    async with Engine(cache=MemoryCache()) as engine:
        model = gemini(engine, server)
        request = opro.Request(
            messages=(
                Message("system", "Be terse."),
                Message("user", "Is 1 even?"),
                Message("assistant", "No."),
                Message("user", "Is 2 even?"),
            ),
            temperature=0.5,
            max_tokens=64,
            stop=("\n\nQ:",),
            seed=7,
        )
        gen = await model.generate(request)
    headers = {k.lower(): v for k, v in server.last_headers.items()}
    assert headers["x-goog-api-key"] == KEY and server.last_model == "gemini-x"
    assert server.last_body == {
        "contents": [
            {"role": "user", "parts": [{"text": "Is 1 even?"}]},
            {"role": "model", "parts": [{"text": "No."}]},
            {"role": "user", "parts": [{"text": "Is 2 even?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "generationConfig": {
            "temperature": 0.5,
            "maxOutputTokens": 64,
            "stopSequences": ["\n\nQ:"],
            "seed": 7,
        },
    }
    assert gen.completion.text == "Yes" and gen.completion.finish_reasons == ("stop",)


async def test_usage_stop_and_length(server: FakeGeminiServer) -> None:
    server.config.responder = lambda prompt: "The answer is 42.\nQ: next" * 10
    async with Engine(cache=MemoryCache()) as engine:
        model = gemini(engine, server)
        stopped = await model.generate(opro.Request(prompt="p" * 40, stop=("\nQ:",)))
        cut = await model.generate(opro.Request(prompt="p" * 40, max_tokens=2))
    assert stopped.completion.text == "The answer is 42."
    assert stopped.usage == opro.Usage(10, 4)  # the fake counts 4 characters per token
    assert cut.completion.finish_reasons == ("length",)


async def test_evaluate_scores_over_http(server: FakeGeminiServer, tmp_path: Path) -> None:
    async with engine_for(tmp_path) as engine:
        model = gemini(engine, server)
        report = await engine.evaluate([GOOD, ""], EXAMPLES, model, grader=ExactGrader())
    assert [s.accuracy for s in report.instructions] == [1.0, 0.5]
    assert server.requests_total == 40 and max(server.prompt_counts.values()) == 1


async def test_n_is_one_call_with_candidate_count(server: FakeGeminiServer) -> None:
    async with Engine(cache=MemoryCache()) as engine:
        gen = await gemini(engine, server).generate(
            opro.Request(prompt="Is 2 even?", temperature=1.0, n=3)
        )
    assert server.last_body["generationConfig"]["candidateCount"] == 3
    assert len(gen.completion.texts) == 3 and server.requests_total == 1
    assert gen.usage.output_tokens == 3


async def test_fewer_candidates_are_topped_up_by_the_engine(server: FakeGeminiServer) -> None:
    server.config.ignore_n = True
    async with Engine(cache=MemoryCache()) as engine:
        model = gemini(engine, server)
        gen = await model.generate(opro.Request(prompt="Is 2 even?", temperature=1.0, n=3))
        assert model.provider.supports_n is False
    assert len(gen.completion.texts) == 3 and server.requests_total == 3


async def test_a_model_without_multiple_candidates_falls_back(server: FakeGeminiServer) -> None:
    server.max_candidates = 1
    async with Engine(cache=MemoryCache()) as engine:
        model = gemini(engine, server)
        # Concurrent calls all sent candidateCount before the first 400 came back.
        firsts = await asyncio.gather(
            *(
                model.generate(opro.Request(prompt=f"Is {i} even?", temperature=1.0, n=3))
                for i in range(3)
            )
        )
        assert model.provider.supports_n is False
        second = await model.generate(opro.Request(prompt="Is 4 even?", temperature=1.0, n=2))
    assert [len(g.completion.texts) for g in firsts] == [3, 3, 3]
    assert len(second.completion.texts) == 2
    # One rejected call per concurrent request, then single-candidate calls only.
    assert server.errors_by_kind["bad_request"] == 3 and server.accepted == 9 + 2


# -- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    ["429", "429_header", "429_bare", "500", "503", "504", "truncated", "drop", "no_candidates"],
)
async def test_transient_failures_are_retried_and_never_graded(
    server: FakeGeminiServer, tmp_path: Path, kind: str
) -> None:
    server.inject(kind, count=5)
    async with engine_for(tmp_path) as engine:
        score = await run_eval(engine, server)
    assert (score.accuracy, score.errors, score.n) == (1.0, 0, 20)
    assert server.requests_total == 25 and max(server.prompt_counts.values()) == 1


@pytest.mark.parametrize("kind", ["bad_key", "401", "403"])
async def test_auth_failures_abort_without_retries(
    server: FakeGeminiServer, tmp_path: Path, kind: str
) -> None:
    server.inject(kind, count=100)
    async with engine_for(tmp_path) as engine:
        with pytest.raises(opro.EvaluationAborted, match="check the API key"):
            await run_eval(engine, server, limits=opro.LimitConfig(max_concurrency=2))
    assert server.accepted == 0 and server.requests_total <= 4


async def test_a_missing_key_is_refused_by_the_server(
    server: FakeGeminiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    async with Engine(cache=MemoryCache()) as engine:
        model = engine.model("gemini/gemini-x", base_url=server.base_url)
        with pytest.raises(opro.ModelCallError, match="PERMISSION_DENIED") as caught:
            await model.generate(opro.Request(prompt="hi"))
    assert isinstance(caught.value.error, opro.AuthenticationError)


@pytest.mark.parametrize("kind", ["400", "404"])
async def test_a_bad_request_is_a_per_pair_error_and_404_aborts(
    server: FakeGeminiServer, tmp_path: Path, kind: str
) -> None:
    server.inject(kind, count=3)
    async with engine_for(tmp_path) as engine:
        if kind == "404":  # an unknown model fails every pair: stop at once
            with pytest.raises(opro.EvaluationAborted, match="NOT_FOUND"):
                await run_eval(engine, server, limits=opro.LimitConfig(max_concurrency=1))
            return
        score = await run_eval(engine, server, limits=opro.LimitConfig(max_concurrency=1))
    assert (score.errors, score.correct, server.requests_total) == (3, 17, 20)
    assert "HTTP 400 INVALID_ARGUMENT" in score.error_messages[0]


@pytest.mark.parametrize("kind", ["safety", "blocked"])
async def test_a_refusal_is_an_empty_answer(
    server: FakeGeminiServer, tmp_path: Path, kind: str
) -> None:
    server.inject(kind)
    async with engine_for(tmp_path) as engine:
        score = await run_eval(engine, server, limits=opro.LimitConfig(max_concurrency=1))
    assert (score.errors, score.correct, server.requests_total) == (0, 19, 20)


async def test_the_key_never_reaches_urls_errors_or_the_cache(
    server: FakeGeminiServer, tmp_path: Path
) -> None:
    server.inject("429", count=2)
    server.inject("400", count=2)
    async with engine_for(tmp_path) as engine:
        model = gemini(engine, server, limits=opro.LimitConfig(max_concurrency=1))
        score = await run_eval(engine, server, limits=opro.LimitConfig(max_concurrency=1))
        provider = model.provider
    assert score.errors == 2 and score.graded == 18
    assert KEY not in " ".join(score.error_messages)
    assert KEY not in provider.connection_key() and KEY not in repr(provider.cache_identity())
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert files and all(KEY.encode() not in p.read_bytes() for p in files)


async def test_a_key_echoed_by_the_server_is_scrubbed() -> None:
    seen: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(str(request.url))
        error = {"code": 400, "message": f"API key not valid: {KEY}", "status": "INVALID_ARGUMENT"}
        return web.json_response({"error": error}, status=400)

    app = web.Application()
    app.router.add_post("/v1beta/models/{target}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    http = HttpPool()
    try:
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        provider = GeminiProvider("gemini-x", http=http, base_url=base, api_key=KEY)
        with pytest.raises(opro.AuthenticationError) as caught:
            await provider.complete(opro.Request(prompt="hi"))
    finally:
        await http.aclose()
        await runner.cleanup()
    assert KEY not in str(caught.value) and "***" in str(caught.value)
    assert seen and KEY not in seen[0]  # the key travels in a header, never in the URL


# -- configuration and pure helpers ---------------------------------------------------------


def test_configuration_and_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GEMINI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(opro.ConfigurationError, match="GEMINI_API_KEY is not set"):
        create_provider("google/gemini-x")
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    google = create_provider("google/gemini-x")
    alias = create_provider("gemini/gemini-x")
    assert google.spec == alias.spec == "google/gemini-x"
    assert google.cache_identity() == alias.cache_identity() == {"model": "google/gemini-x"}
    assert google.connection_key() == alias.connection_key()
    monkeypatch.setenv("GEMINI_BASE_URL", "http://proxy.local/v1beta")
    proxied = create_provider("google/models/gemini-x")
    assert isinstance(proxied, GeminiProvider) and proxied.model == "gemini-x"
    assert proxied.cache_identity() == {
        "model": "google/gemini-x",
        "base_url": "http://proxy.local",
    }


def google_error(status: int, label: str, message: str = "nope", *details: object) -> bytes:
    error = {"code": status, "message": message, "status": label, "details": list(details)}
    return orjson.dumps({"error": error})


RETRY = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
BAD_KEY = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}


@pytest.mark.parametrize(
    ("status", "body", "headers", "cls", "retry_after"),
    [
        (429, google_error(429, "RESOURCE_EXHAUSTED", "q", RETRY), {}, opro.RateLimitError, 7.0),
        (
            429,
            google_error(429, "RESOURCE_EXHAUSTED"),
            {"retry-after": "2"},
            opro.RateLimitError,
            2.0,
        ),
        (429, google_error(429, "RESOURCE_EXHAUSTED"), {}, opro.RateLimitError, None),
        (500, google_error(500, "INTERNAL"), {}, opro.TransientError, None),
        (503, google_error(503, "UNAVAILABLE"), {}, opro.TransientError, None),
        (504, google_error(504, "DEADLINE_EXCEEDED"), {}, opro.TransientError, None),
        (400, google_error(400, "INVALID_ARGUMENT"), {}, opro.BadRequestError, None),
        (400, google_error(400, "FAILED_PRECONDITION"), {}, opro.BadRequestError, None),
        (
            400,
            google_error(400, "INVALID_ARGUMENT", "x", BAD_KEY),
            {},
            opro.AuthenticationError,
            None,
        ),
        (
            400,
            google_error(400, "INVALID_ARGUMENT", "API key not valid."),
            {},
            opro.AuthenticationError,
            None,
        ),
        (401, google_error(401, "UNAUTHENTICATED"), {}, opro.AuthenticationError, None),
        (403, google_error(403, "PERMISSION_DENIED"), {}, opro.AuthenticationError, None),
        (404, google_error(404, "NOT_FOUND"), {}, opro.BadRequestError, None),
        (502, b"<html>Bad Gateway</html>", {}, opro.TransientError, None),
    ],
)
def test_error_classification(
    status: int, body: bytes, headers: dict[str, str], cls: type, retry_after: float | None
) -> None:
    err = classify_gemini_error(status, body, headers, where="m")
    assert type(err) is cls and err.status == status and f"HTTP {status}" in err.message
    if isinstance(err, opro.RateLimitError):
        assert err.retry_after == retry_after


def test_response_parsing_edge_cases() -> None:
    def parse(payload: object, n: int = 1) -> opro.Completion:
        return GeminiProvider._parse(orjson.dumps(payload), "m", n)

    thinking = {
        "candidates": [
            {
                "content": {"parts": [{"text": "plan", "thought": True}, {"text": "4"}]},
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 5,
            "candidatesTokenCount": 1,
            "thoughtsTokenCount": 9,
        },
    }
    done = parse(thinking)
    assert done.texts == ("4",) and done.usage == opro.Usage(5, 10)
    spent = parse({"candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS"}]})
    assert spent.texts == ("",) and spent.finish_reasons == ("length",)
    assert parse({"promptFeedback": {"blockReason": "OTHER"}}, n=2).texts == ("", "")
    two = parse(
        {
            "candidates": [
                {"index": 1, "content": {"parts": [{"text": "b"}]}, "finishReason": "STOP"},
                {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},
            ]
        }
    )
    assert two.texts == ("a", "b")
    broken_bodies: list[object] = [{"candidates": [{"finishReason": "STOP"}]}, {"candidates": [{}]}]
    for broken in [*broken_bodies, [], {}]:
        with pytest.raises(opro.TransientError):
            parse(broken)


@pytest.mark.live
@pytest.mark.skipif(
    not (os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")),
    reason="live Gemini test: GEMINI_API_KEY / GOOGLE_API_KEY is not set",
)
async def test_live_gemini() -> None:
    name = os.environ.get("OPRO_LIVE_GEMINI_MODEL", "gemini-2.5-flash-lite")
    async with Engine(use_cache=False, retry=opro.RetryPolicy(timeout=60.0)) as engine:
        model = engine.model(f"google/{name}", decoding=opro.Decoding(max_tokens=64))
        gen = await model.generate(model.request("Reply with exactly one word: pong"))
    assert "pong" in gen.completion.text.lower()
    assert gen.usage.input_tokens > 0 and gen.usage.output_tokens > 0
