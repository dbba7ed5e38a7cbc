"""Loopback fake of Anthropic's Messages API, for the `anthropic/` provider's tests.

It speaks the documented wire format so the provider's real HTTP client is exercised:
POST /v1/messages with `x-api-key` and `anthropic-version` headers; a body validated like
the real API does (model, max_tokens and messages required; no "system" role; unknown
fields such as `n` or `seed` rejected); `message` responses with text blocks, usage and
stop_reason; `anthropic-ratelimit-requests-*` headers (reset as an RFC 3339 time) when an
rpm limit is set; and `{"type": "error", "error": {...}}` bodies with Anthropic's types.

Lifecycle, counters, the FIFO fault script, latency and the request bucket are
`FakeOpenAIServer`'s: only the route and the wire format differ, so this subclasses it.
The last request's body and headers are kept in `last_body` / `last_headers`.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from opro.testing.fake_openai import (
    USAGE_FAULTS,
    FakeOpenAIServer,
    FakeServerConfig,
    ParsedRequest,
    cut_answer,
    json_response,
    spoil_usage,
)

__all__ = ["FAULT_KINDS", "FakeAnthropicServer", "FakeServerConfig"]

_STATUS_ERRORS: dict[str, tuple[int, str, str]] = {
    "529": (529, "overloaded_error", "Overloaded"),
    "500": (500, "api_error", "Internal server error"),
    "503": (503, "api_error", "Service unavailable"),
    "400": (400, "invalid_request_error", "Injected invalid request."),
}
# Faults a real server would only produce after doing the work, so they pay the latency.
_SLOW_FAULTS = {"529", "500", "503", "truncated", "drop", "empty_content", "refusal"}
_SLOW_FAULTS |= USAGE_FAULTS
FAULT_KINDS = frozenset(_SLOW_FAULTS | set(_STATUS_ERRORS) | {"429", "429_bare", "401", "hang"})
_VERSIONS = {"2023-06-01", "2023-01-01"}
_FIELDS = {
    "model",
    "max_tokens",
    "messages",
    "system",
    "temperature",
    "stop_sequences",
    "top_p",
    "top_k",
    "metadata",
    "stream",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
}


def rfc3339(epoch: float) -> str:
    """An epoch time as Anthropic writes reset times: "2024-06-01T12:00:30Z"."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(content: Any) -> str | None:
    """A message's text: a string, or the text blocks of a block list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        for b in content
    ):
        return "".join(b["text"] for b in content)
    return None


def _validate(body: Any) -> tuple[ParsedRequest, int] | str:
    """The request and its input size in characters, or the API's error message."""
    if not isinstance(body, dict):
        return "There was an error parsing the body of your request as JSON."
    extra = sorted(set(body) - _FIELDS)
    if extra:
        return f"{extra[0]}: Extra inputs are not permitted"
    model, max_tokens, messages = body.get("model"), body.get("max_tokens"), body.get("messages")
    if not isinstance(model, str):
        return "model: Field required"
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        return "max_tokens: Field required"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    texts: list[str] = []
    prompt = ""
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "system":
            return (
                'messages: Unexpected role "system". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.'
            )
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        text = _text(message.get("content"))
        if text is None:
            return f"messages.{i}.content: Input should be a valid string or list of blocks"
        texts.append(text)
        if role == "user":
            prompt = text
    system = body.get("system", "")
    if _text(system) is None:
        return "system: Input should be a valid string or list of text blocks"
    temperature = body.get("temperature", 1.0)
    if not isinstance(temperature, int | float) or not 0.0 <= temperature <= 1.0:
        return "temperature: Input should be less than or equal to 1"
    stops = body.get("stop_sequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        return "stop_sequences: Input should be a valid list of strings"
    size = len(_text(system) or "") + sum(map(len, texts))
    return ParsedRequest(prompt, model, 1, max_tokens, stops), size


class FakeAnthropicServer(FakeOpenAIServer):
    """In-process aiohttp server faking Anthropic; `base_url` has no /v1 suffix."""

    fault_kinds = FAULT_KINDS
    base_path = ""
    last_body: Any
    last_headers: dict[str, str]

    def reset_stats(self) -> None:
        """Zero the counters (the parent's) and forget the last request."""
        super().reset_stats()
        self.last_body = None
        self.last_headers = {}

    def _add_routes(self, app: web.Application) -> None:
        # The parent's counting wrapper calls `self._complete`, overridden below.
        app.router.add_post("/v1/messages", partial(self._counted, chat=True))

    async def __aenter__(self) -> FakeAnthropicServer:
        await self.start()
        return self

    # -- wire format -------------------------------------------------------------------------

    def _error(
        self, status: int, type_: str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        self._ids += 1
        body = {"type": "error", "error": {"type": type_, "message": message}}
        body["request_id"] = f"req_fake{self._ids}"
        return json_response(status, body, headers)

    def _authorized(self, request: web.Request) -> bool:
        key = request.headers.get("x-api-key")
        wanted = self.config.require_api_key
        return bool(key) and (wanted is None or key == wanted)

    def _unauthorized(self) -> web.Response:
        return self._error(401, "authentication_error", "invalid x-api-key")

    def _limit_headers(self) -> dict[str, str]:
        bucket = self._bucket
        if bucket is None:
            return {}
        full_in = (bucket.capacity - bucket.level) / bucket.rate
        return {
            "anthropic-ratelimit-requests-limit": str(int(bucket.rpm)),
            "anthropic-ratelimit-requests-remaining": str(math.floor(bucket.level)),
            "anthropic-ratelimit-requests-reset": rfc3339(time.time() + full_in),
        }

    async def _complete(self, request: web.Request, chat: bool) -> web.StreamResponse:
        cfg = self.config
        raw = await request.read()
        self.last_headers = dict(request.headers)
        try:
            self.last_body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.last_body = None
        checked = _validate(self.last_body)
        if not isinstance(checked, str):
            self.attempt_counts[checked[0].prompt] += 1
        if not request.headers.get("x-api-key"):
            return self._fail(
                "auth", self._error(401, "authentication_error", "x-api-key header is required")
            )
        if not self._authorized(request):
            return self._fail("auth", self._unauthorized())
        version = request.headers.get("anthropic-version")
        if version not in _VERSIONS:
            msg = "anthropic-version: header is required" if not version else "invalid version"
            return self._fail("bad_request", self._error(400, "invalid_request_error", msg))
        if isinstance(checked, str):
            return self._fail("bad_request", self._error(400, "invalid_request_error", checked))
        req, size = checked
        headers: dict[str, str] = {}
        if cfg.rpm is not None:
            wait = self._take_token(cfg.rpm)
            headers = self._limit_headers()
            if wait is not None:
                headers["retry-after"] = str(max(1, math.ceil(wait)))
                msg = "This request would exceed your organization's rate limit."
                return self._fail("rate_limit", self._error(429, "rate_limit_error", msg, headers))
        kind = self._next_fault()
        delay = self._sample_latency() if kind is None or kind in _SLOW_FAULTS else 0.0
        if delay > 0.0:
            await asyncio.sleep(delay)
        if kind is not None:
            return await self._anthropic_fault(kind, request, req, size, headers)
        self.accepted += 1
        self.prompt_counts[req.prompt] += 1
        self.latencies.append(delay)
        return json_response(200, self._message(req, size), headers)

    def _message(self, req: ParsedRequest, size: int) -> dict[str, Any]:
        answer = self.config.responder(req.prompt)
        text, finish = cut_answer(answer, req)
        matched = None
        if finish == "stop" and len(text) < len(answer):
            matched = next(s for s in req.stop if s and answer.find(s) == len(text))
        reason = "max_tokens" if finish == "length" else "end_turn"
        self._ids += 1
        usage = {"input_tokens": max(1, size // 4), "output_tokens": max(1, len(text) // 4)}
        self.billed_prompt_tokens += usage["input_tokens"]
        self.billed_completion_tokens += usage["output_tokens"]
        return {
            "id": f"msg_fake{self._ids}",
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "stop_sequence" if matched is not None else reason,
            "stop_sequence": matched,
            "usage": usage,
        }

    async def _anthropic_fault(
        self,
        kind: str,
        request: web.Request,
        req: ParsedRequest,
        size: int,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        if kind in _STATUS_ERRORS:
            status, type_, message = _STATUS_ERRORS[kind]
            return self._fail(kind, self._error(status, type_, message, headers))
        if kind == "401":
            return self._fail(kind, self._unauthorized())
        if kind in ("429", "429_bare"):
            if kind == "429":
                headers["retry-after"] = format(self.config.retry_after_s, "g")
            msg = "Number of requests has exceeded your per-minute rate limit."
            return self._fail(kind, self._error(429, "rate_limit_error", msg, headers))
        self.errors_by_kind[kind] += 1
        if kind in ("drop", "hang"):
            if kind == "hang":
                await self._stopping.wait()
            return self._drop(request)
        payload = self._message(req, size)
        if kind == "truncated":
            raw = orjson.dumps(payload)
            return web.Response(
                body=raw[: len(raw) // 2], content_type="application/json", headers=headers
            )
        if kind in USAGE_FAULTS:
            fields = ("input_tokens", "output_tokens")
            self.billed_prompt_tokens += spoil_usage(kind, payload, "usage", fields)
            return json_response(200, payload, headers)
        payload["content"] = []
        if kind == "refusal":
            payload["stop_reason"] = "refusal"
        return json_response(200, payload, headers)
