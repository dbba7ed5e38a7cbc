"""Loopback fake of the OpenAI HTTP API, for integration tests and the throughput benchmark.

It speaks the real wire format (chat/completions, completions, models, error bodies and
rate-limit headers) so the engine's real HTTP client is exercised end to end, and it can
inject every failure the engine must survive: 5xx, 429 with and without retry hints,
truncated JSON, dropped connections, hangs, malformed choices and malformed usage. It
counts the tokens it bills (`billed_*`), so tests can compare a run's spend with its bill.

Run ``python -m opro.testing.fake_openai --port 0`` to serve from a subprocess; it prints
one ``READY <base_url>`` line once listening and exits 0 on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import random
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
from aiohttp import web

__all__ = [
    "ECHO_FORMS",
    "FAULT_KINDS",
    "USAGE_FAULTS",
    "FakeOpenAIServer",
    "FakeServerConfig",
    "default_responder",
    "varied_responder",
]

# A good answer whose usage report is broken ("usage_over": too big but true): the server
# did the work and bills its real usage (plus OVERBILL_TOKENS for "usage_over").
USAGE_FAULTS = frozenset(
    {
        "usage_string",  # "usage": "lots"
        "usage_null",  # "usage": null
        "usage_missing",  # no usage at all
        "usage_partial",  # the input count left out
        "usage_text",  # counts as text: "many"
        "usage_negative",  # a negative input count, which would credit the budget
        "usage_bool",  # true / false counts
        "usage_float",  # 12.5 tokens
        "usage_huge",  # 1e300 tokens
        "usage_over",  # more input tokens than the prompt can have: the server bills them
    }
)
OVERBILL_TOKENS = 100_000
# Faults a real server would only produce after doing the work, so they pay the latency.
_SLOW_FAULTS = {"500", "502", "503", "truncated", "drop", "empty_choices", "missing_fields"}
_SLOW_FAULTS |= USAGE_FAULTS
FAULT_KINDS = frozenset(_SLOW_FAULTS | {"429", "429_bare", "401", "400", "hang"})
_STATUS_ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    "500": (500, "server_error", None, "The server had an error while processing your request."),
    "502": (502, "server_error", None, "Bad gateway."),
    "503": (503, "server_error", None, "The engine is currently overloaded."),
    "400": (400, "invalid_request_error", None, "Injected invalid request."),
}


# How a server may quote a rejected key back (`FakeServerConfig.echo_key`); real ones do.
ECHO_FORMS: dict[str, Callable[[str], str]] = {
    "exact": lambda k: k,
    "upper": str.upper,
    "lower": str.lower,
    "dots": lambda k: f"{k[:6]}...{k[-4:]}",
    "stars": lambda k: k[:3] + "*" * max(1, len(k) - 7) + k[-4:],
    "ellipsis": lambda k: f"{k[:8]}\u2026",
}


def default_responder(prompt: str) -> str:
    """Answer "True"/"False" from the prompt's sha256, so answers are a pure function of it."""
    return "True" if hashlib.sha256(prompt.encode()).digest()[0] % 2 == 0 else "False"


_WORDS = ("first", "we", "look", "at", "each", "step", "then", "count", "the", "moves", "and")


def varied_responder(prompt: str) -> str:
    """Answer lengths that vary by instruction, as real scorers' do: a prompt that asks to
    think step by step gets a worked answer of 20-140 words (from its sha256) ending in the
    verdict; any other prompt gets `default_responder`'s one word."""
    verdict = default_responder(prompt)
    if "step by step" not in prompt.lower():
        return verdict
    digest = hashlib.sha256(prompt.encode()).digest()
    words = 20 + digest[1] % 121
    body = " ".join(_WORDS[(digest[2] + i) % len(_WORDS)] for i in range(words))
    return f"Let's see: {body}. So the answer is {verdict}."


RESPONDERS: dict[str, Callable[[str], str]] = {
    "default": default_responder,
    "varied": varied_responder,
}


@dataclass
class FakeServerConfig:
    """Server behaviour; read on every request, so tests may mutate it between requests."""

    latency_s: float = 0.0
    jitter_s: float = 0.0
    seed: int = 0
    rpm: float | None = None
    require_api_key: str | None = None
    ignore_n: bool = False
    responder: Callable[[str], str] = default_responder
    fault_rates: dict[str, float] = field(default_factory=dict)
    retry_after_s: float = 1.0
    models: tuple[str, ...] = ("fake-model",)
    echo_key: str | None = None  # a 401 quotes the key it got, in this ECHO_FORMS form
    # Query parameters every completion request must carry (Azure's api-version), else 404.
    required_query: dict[str, str] = field(default_factory=dict)
    # More requests in flight than this are answered 429 at once (Retry-After: retry_after_s).
    max_concurrency: int | None = None


def format_reset(seconds: float) -> str:
    """Format a duration like OpenAI's x-ratelimit-reset-* headers ("20ms", "1s", "6m0s")."""
    if seconds < 1.0:
        ms = round(seconds * 1000)
        return f"{ms}ms" if ms > 0 else "0s"
    minutes, secs = divmod(round(seconds, 3), 60.0)
    sec_text = f"{secs:.3f}".rstrip("0").rstrip(".")
    if minutes < 1:
        return f"{sec_text}s"
    hours, minutes = divmod(int(minutes), 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{sec_text}s"


class _Bucket:
    """Token bucket mirroring a per-minute request limit, as OpenAI enforces it."""

    def __init__(self, rpm: float, now: float) -> None:
        self.rpm = rpm
        self.rate = rpm / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self) -> float | None:
        """Consume one token; on failure return seconds until one is available."""
        if self.level >= 1.0:
            self.level -= 1.0
            return None
        return (1.0 - self.level) / self.rate

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(int(self.rpm)),
            "x-ratelimit-remaining-requests": str(math.floor(self.level)),
            "x-ratelimit-reset-requests": format_reset((self.capacity - self.level) / self.rate),
        }


_Headers = dict[str, str] | None


@dataclass
class ParsedRequest:
    prompt: str
    model: str
    n: int
    max_tokens: int | None
    stop: list[str]


def json_response(status: int, payload: Any, headers: _Headers = None) -> web.Response:
    body = orjson.dumps(payload)
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _error(
    status: int, message: str, type_: str, code: str | None, headers: _Headers = None, **extra: Any
) -> web.Response:
    """OpenAI's error body; ``param`` may be given in extra."""
    error = {"message": message, "type": type_, "param": None, "code": code, **extra}
    return json_response(status, {"error": error}, headers)


def _parse(body: Any, chat: bool) -> ParsedRequest | tuple[str, str | None]:
    """Validate a request body; return the request or (error message, param)."""
    if not isinstance(body, dict):
        return ("We could not parse the JSON body of your request.", None)
    prompt: Any
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return ("'messages' must be a non-empty array.", "messages")
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        content = (users or [{}])[-1].get("content", "")
        if isinstance(content, list):  # multi-part content: keep the text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            return ("Message content must be a string.", "messages")
        prompt = content
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return ("'prompt' must be a string.", "prompt")
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        return ("'n' must be an integer between 1 and 128.", "n")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        return ("'max_tokens' must be a positive integer.", "max_tokens")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        return ("'stop' must be a string or an array of strings.", "stop")
    model = body.get("model")
    return ParsedRequest(
        prompt, model if isinstance(model, str) else "fake-model", n, max_tokens, stops
    )


def spoil_usage(kind: str, payload: dict[str, Any], key: str, fields: tuple[str, str]) -> int:
    """Break `payload[key]` (a usage object with input/output count `fields`) as `kind`
    says; return the extra input tokens the server really bills ("usage_over")."""
    usage = payload[key]
    counts: dict[str, Any] = {
        "usage_text": {fields[0]: "many", fields[1]: "many"},
        "usage_negative": {fields[0]: -1000},
        "usage_bool": {fields[0]: True, fields[1]: False},
        "usage_float": {fields[0]: 12.5},
        "usage_huge": {fields[0]: 1e300, fields[1]: 1e300},
        "usage_over": {fields[0]: usage[fields[0]] + OVERBILL_TOKENS},
    }
    if kind == "usage_string":
        payload[key] = "lots"
    elif kind == "usage_null":
        payload[key] = None
    elif kind == "usage_missing":
        del payload[key]
    elif kind == "usage_partial":
        del usage[fields[0]]
    else:
        usage.update(counts[kind])
    return OVERBILL_TOKENS if kind == "usage_over" else 0


def cut_answer(answer: str, req: ParsedRequest) -> tuple[str, str]:
    """Apply stop strings and max_tokens (4 characters per token); return (text, finish)."""
    cuts = [i for i in (answer.find(s) for s in req.stop if s) if i >= 0]
    if cuts:
        answer = answer[: min(cuts)]
    if req.max_tokens is not None and len(answer) > req.max_tokens * 4:
        return answer[: req.max_tokens * 4], "length"
    return answer, "stop"


class FakeOpenAIServer:
    """In-process aiohttp server faking OpenAI; counters are public attributes for asserts.

    Other vendors' fakes subclass it: they set `fault_kinds` and `base_path` and override
    `_add_routes` and `_complete`; lifecycle, fault script and counters are shared.
    """

    fault_kinds: frozenset[str] = FAULT_KINDS
    base_path = "/v1"  # what `base_url` ends with

    def __init__(
        self,
        config: FakeServerConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config if config is not None else FakeServerConfig()
        self.host = host
        self.port = port
        self.base_url = ""
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._script: deque[str] = deque()
        self._header_script: deque[dict[str, str]] = deque()
        self._bucket: _Bucket | None = None
        self._ids = 0
        self.reset_stats()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> str:
        """Bind (port 0 picks a free port) and return the base URL ending in /v1."""
        unknown = set(self.config.fault_rates) - self.fault_kinds
        if unknown:
            raise ValueError(f"unknown fault kinds in fault_rates: {sorted(unknown)}")
        self._stopping.clear()
        app = web.Application()
        self._add_routes(app)
        app.router.add_get("/stats", self._get_stats)
        app.router.add_post("/stats/reset", self._reset)
        app.router.add_post("/inject", self._inject)
        # Short shutdown timeout: in-flight sleeps are cancelled rather than awaited.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.base_url = f"http://{self.host}:{self.port}{self.base_path}"
        return self.base_url

    def _add_routes(self, app: web.Application) -> None:
        """The vendor's endpoints; `_counted` wraps them so the counters see every request."""
        app.router.add_post("/v1/chat/completions", partial(self._counted, chat=True))
        app.router.add_post("/v1/completions", partial(self._counted, chat=False))
        app.router.add_get("/v1/models", self._models)

    async def stop(self) -> None:
        """Release hung handlers first so the runner's cleanup does not wait on them."""
        self._stopping.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeOpenAIServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- control -----------------------------------------------------------------------------

    def inject(self, kind: str, count: int = 1) -> None:
        """Make the next ``count`` requests that pass auth and the rate limit fail with kind."""
        if kind not in self.fault_kinds:
            raise ValueError(
                f"unknown fault kind {kind!r}; expected one of {sorted(self.fault_kinds)}"
            )
        self._script.extend([kind] * count)

    def inject_headers(self, headers: dict[str, str], count: int = 1) -> None:
        """Add `headers` to the next ``count`` successful answers (e.g. rate-limit resets)."""
        self._header_script.extend([dict(headers)] * count)

    def reset_stats(self) -> None:
        """Zero the counters and reseed the RNGs so each run is reproducible."""
        self.requests_total = 0
        self.accepted = 0
        self.n429 = 0
        self.errors_by_kind: Counter[str] = Counter()
        self.prompt_counts: Counter[str] = Counter()
        self.attempt_counts: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.last_body: Any = None
        self.billed_prompt_tokens = 0
        self.billed_completion_tokens = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._latency_rng = random.Random(self.config.seed)
        self._fault_rng = random.Random(self.config.seed + 1)

    def stats(self, *, prompts: bool = False) -> dict[str, Any]:
        """JSON-able summary; per-prompt counters only when ``prompts`` (they can be large)."""
        out: dict[str, Any] = {
            "requests_total": self.requests_total,
            "accepted": self.accepted,
            "n429": self.n429,
            "errors_by_kind": dict(self.errors_by_kind),
            "distinct_prompts_answered": len(self.prompt_counts),
            "max_answers_per_prompt": max(self.prompt_counts.values(), default=0),
            "latencies": list(self.latencies),
            "billed_prompt_tokens": self.billed_prompt_tokens,
            "billed_completion_tokens": self.billed_completion_tokens,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }
        if prompts:
            out["prompt_counts"] = dict(self.prompt_counts)
            out["attempt_counts"] = dict(self.attempt_counts)
        return out

    # -- handlers ----------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized()
        data = [{"id": m, "object": "model", "owned_by": "fake"} for m in self.config.models]
        return json_response(200, {"object": "list", "data": data})

    async def _get_stats(self, request: web.Request) -> web.StreamResponse:
        return json_response(200, self.stats(prompts=request.query.get("prompts") in ("1", "true")))

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        self.reset_stats()
        return json_response(200, {"ok": True})

    async def _inject(self, request: web.Request) -> web.StreamResponse:
        """`inject()` and `inject_headers()` for a server in another process:
        `POST /inject?kind=429&count=64`, or a JSON body `{"headers": {...}, "count": 1}`."""
        try:
            count = int(request.query.get("count", "1"))
            body = await request.read()
            if body:
                headers = orjson.loads(body)["headers"]
                self.inject_headers({str(k): str(v) for k, v in headers.items()}, count)
            else:
                self.inject(request.query.get("kind", ""), count)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return _error(400, f"bad injection: {exc}", "invalid_request_error", None)
        return json_response(200, {"ok": True})

    async def _counted(self, request: web.Request, chat: bool) -> web.StreamResponse:
        self.requests_total += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for name, value in self.config.required_query.items():
                if request.query.get(name) != value:
                    msg = f"Resource not found: query parameter {name}={value} is required."
                    return self._fail("query", _error(404, msg, "invalid_request_error", "404"))
            return await self._complete(request, chat)
        finally:
            self.in_flight -= 1

    def _authorized(self, request: web.Request) -> bool:
        key = self.config.require_api_key
        return key is None or request.headers.get("Authorization") == f"Bearer {key}"

    def _unauthorized(self) -> web.Response:
        msg = "Incorrect API key provided."  # never echo the key, unlike the real API
        return _error(401, msg, "invalid_request_error", "invalid_api_key")

    def _echo_key(self, request: web.Request) -> web.Response | None:
        """OpenAI's real 401, which quotes (part of) the key it was given."""
        form = self.config.echo_key
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if form is None or not presented:
            return None
        msg = f"Incorrect API key provided: {ECHO_FORMS[form](presented)}."
        return _error(401, msg, "invalid_request_error", "invalid_api_key")

    def _fail(self, kind: str, response: web.Response) -> web.Response:
        self.errors_by_kind[kind] += 1
        if response.status == 429:
            self.n429 += 1
        return response

    async def _complete(self, request: web.Request, chat: bool) -> web.StreamResponse:
        cfg = self.config
        try:
            body: Any = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        self.last_body = body  # for tests of the request's wire format
        req = _parse(body, chat)
        if isinstance(req, ParsedRequest):
            self.attempt_counts[req.prompt] += 1
        if not self._authorized(request):
            return self._fail("auth", self._echo_key(request) or self._unauthorized())
        if not isinstance(req, ParsedRequest):
            message, param = req
            return self._fail(
                "bad_request", _error(400, message, "invalid_request_error", None, param=param)
            )
        headers: dict[str, str] = {}
        if cfg.rpm is not None:
            wait = self._take_token(cfg.rpm)
            assert self._bucket is not None
            headers = self._bucket.headers()
            if wait is not None:
                headers["Retry-After"] = str(max(1, math.ceil(wait)))
                headers["retry-after-ms"] = str(math.ceil(wait * 1000))
                msg = f"Rate limit reached for requests per min (RPM): Limit {int(cfg.rpm)}."
                return self._fail(
                    "rate_limit", _error(429, msg, "requests", "rate_limit_exceeded", headers)
                )
        if cfg.max_concurrency is not None and self.in_flight > cfg.max_concurrency:
            msg = f"Too many concurrent requests: limit {cfg.max_concurrency}."
            busy = {**headers, **self._retry_headers(cfg.retry_after_s)}
            return self._fail(
                "concurrency", _error(429, msg, "requests", "rate_limit_exceeded", busy)
            )
        kind = self._next_fault()
        delay = self._sample_latency() if kind is None or kind in _SLOW_FAULTS else 0.0
        if delay > 0.0:
            await asyncio.sleep(delay)
        if kind is not None:
            return await self._fault(kind, request, req, chat, headers)
        payload = self._answer(req, chat)
        self.accepted += 1
        self.prompt_counts[req.prompt] += 1
        self.latencies.append(delay)
        if self._header_script:
            headers.update(self._header_script.popleft())
        return json_response(200, payload, headers)

    # -- helpers -----------------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def _take_token(self, rpm: float) -> float | None:
        now = self._now()
        if self._bucket is None or self._bucket.rpm != rpm:
            self._bucket = _Bucket(rpm, now)  # a changed limit starts a fresh, full bucket
        self._bucket.refill(now)
        return self._bucket.take()

    def _sample_latency(self) -> float:
        cfg = self.config
        if cfg.jitter_s <= 0.0:
            return max(0.0, cfg.latency_s)
        return max(
            0.0,
            self._latency_rng.uniform(cfg.latency_s - cfg.jitter_s, cfg.latency_s + cfg.jitter_s),
        )

    @staticmethod
    def _retry_headers(wait: float) -> dict[str, str]:
        return {
            "Retry-After": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(round(wait * 1000)),
        }

    def _next_fault(self) -> str | None:
        if self._script:
            return self._script.popleft()
        rates = self.config.fault_rates
        if not rates:
            return None
        draw = self._fault_rng.random()
        for kind, rate in rates.items():
            if draw < rate:
                return kind
            draw -= rate
        return None

    def _answer(self, req: ParsedRequest, chat: bool) -> dict[str, Any]:
        text, finish = cut_answer(self.config.responder(req.prompt), req)
        n = 1 if self.config.ignore_n else req.n
        choices: list[dict[str, Any]]
        if chat:
            message = {"role": "assistant", "content": text}
            choices = [{"index": i, "message": message, "finish_reason": finish} for i in range(n)]
        else:
            choices = [
                {"index": i, "text": text, "finish_reason": finish, "logprobs": None}
                for i in range(n)
            ]
        self._ids += 1
        usage = {"prompt_tokens": max(1, len(req.prompt) // 4)}
        usage["completion_tokens"] = n * max(1, len(text) // 4)
        # Every answer the server computes is billed, even one whose body is later broken.
        self.billed_prompt_tokens += usage["prompt_tokens"]
        self.billed_completion_tokens += usage["completion_tokens"]
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-fake{self._ids}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": choices,
            "usage": usage,
        }

    async def _fault(
        self,
        kind: str,
        request: web.Request,
        req: ParsedRequest,
        chat: bool,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        if kind in _STATUS_ERRORS:
            status, type_, code, message = _STATUS_ERRORS[kind]
            return self._fail(kind, _error(status, message, type_, code, headers))
        if kind == "401":
            return self._fail(kind, self._unauthorized())
        if kind in ("429", "429_bare"):
            if kind == "429":
                headers.update(self._retry_headers(self.config.retry_after_s))
            msg = "Rate limit reached for requests."
            return self._fail(kind, _error(429, msg, "requests", "rate_limit_exceeded", headers))
        self.errors_by_kind[kind] += 1
        if kind in ("drop", "hang"):
            if kind == "hang":
                await self._stopping.wait()
            return self._drop(request)
        payload = self._answer(req, chat)
        if kind == "truncated":
            raw = orjson.dumps(payload)
            return web.Response(
                body=raw[: len(raw) // 2], content_type="application/json", headers=headers
            )
        if kind in USAGE_FAULTS:
            fields = ("prompt_tokens", "completion_tokens")
            self.billed_prompt_tokens += spoil_usage(kind, payload, "usage", fields)
        elif kind == "empty_choices":
            payload["choices"] = []
        elif kind == "missing_fields":
            for choice in payload["choices"]:
                choice.pop("message", None)
                choice.pop("text", None)
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        return json_response(200, payload, headers)

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        """Close the socket without a response, so the client sees a disconnect."""
        transport = request.transport
        if transport is not None:
            transport.close()
        return web.Response(status=500)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve a fake OpenAI API on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--jitter", type=float, default=0.0, help="uniform +/- seconds")
    parser.add_argument("--rpm", type=float, default=None, help="requests per minute limit")
    parser.add_argument(
        "--max-concurrency", type=int, default=None, help="429 beyond this many in flight"
    )
    parser.add_argument(
        "--retry-after", type=float, default=1.0, help="seconds a 429 asks the client to wait"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--responder", choices=sorted(RESPONDERS), default="default", help="how it answers"
    )
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    parser.add_argument("--ignore-n", action="store_true", help="always return one choice")
    parser.add_argument("--echo-key", choices=sorted(ECHO_FORMS), help="401s quote the key")
    parser.add_argument(
        "--require-query", action="append", default=[], metavar="NAME=VALUE", help="else 404"
    )
    parser.add_argument(
        "--fault", action="append", default=[], metavar="KIND=RATE", help="probabilistic fault"
    )
    return parser.parse_args(argv)


async def serve_until_signalled(server: FakeOpenAIServer) -> int:
    """Run `server` as a process of its own: print `READY <base url>` for the parent
    (`testing.process.ServerProcess` waits for that line), then serve until SIGTERM/SIGINT."""
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    print(f"READY {await server.start()}", flush=True)
    try:
        await done.wait()
    finally:
        await server.stop()
    return 0


async def _serve(args: argparse.Namespace) -> int:
    rates: dict[str, float] = {}
    for spec in args.fault:
        kind, _, rate = spec.partition("=")
        if kind not in FAULT_KINDS:
            print(f"unknown fault kind {kind!r}", file=sys.stderr)
            return 2
        rates[kind] = float(rate)
    config = FakeServerConfig(
        latency_s=args.latency,
        jitter_s=args.jitter,
        seed=args.seed,
        rpm=args.rpm,
        require_api_key=args.api_key,
        ignore_n=args.ignore_n,
        fault_rates=rates,
        echo_key=args.echo_key,
        required_query=dict(q.partition("=")[::2] for q in args.require_query),
        max_concurrency=args.max_concurrency,
        retry_after_s=args.retry_after,
        responder=RESPONDERS[args.responder],
    )
    server = FakeOpenAIServer(config, host=args.host, port=args.port)
    return await serve_until_signalled(server)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m opro.testing.fake_openai``."""
    return asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
