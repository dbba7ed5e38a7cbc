"""Loopback fake of the Gemini API's generateContent, for the `google/` provider's tests.

It speaks the documented wire format so the provider's real HTTP client is exercised:
POST /v1beta/models/{model}:generateContent with the key in `x-goog-api-key` (or `?key=`);
a body validated like the real API does (contents required, roles "user"/"model", unknown
fields rejected as "Invalid JSON payload"); responses with candidates, finishReason and
usageMetadata; and Google's `{"error": {"code", "message", "status", "details"}}` bodies,
including `google.rpc.RetryInfo` on 429 and `ErrorInfo` API_KEY_INVALID for a wrong key.
The real API sends no rate-limit headers, and neither does this fake. Messages for limits
the docs state without quoting an error (`max_candidates`, five stop sequences) are
paraphrased.

Lifecycle, counters, the FIFO fault script, latency and the request bucket are
`FakeOpenAIServer`'s: only the route and the wire format differ, so this subclasses it.
"""

from __future__ import annotations

import asyncio
import math
import re
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

__all__ = ["FAULT_KINDS", "FakeGeminiServer", "FakeServerConfig"]

_STATUS_ERRORS: dict[str, tuple[int, str, str]] = {
    "500": (500, "INTERNAL", "An internal error has occurred. Please retry."),
    "503": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "504": (504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
    "400": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "401": (401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
    "403": (403, "PERMISSION_DENIED", "The caller does not have permission"),
}
_SLOW_FAULTS = {"500", "503", "504", "truncated", "drop", "safety", "blocked", "no_candidates"}
_SLOW_FAULTS |= USAGE_FAULTS
FAULT_KINDS = frozenset(
    _SLOW_FAULTS | set(_STATUS_ERRORS) | {"429", "429_header", "429_bare", "bad_key", "404", "hang"}
)
_TOP = {
    "contents",
    "system_instruction",
    "generation_config",
    "safety_settings",
    "tools",
    "tool_config",
    "cached_content",
}
_CONFIG = {
    "temperature",
    "max_output_tokens",
    "stop_sequences",
    "candidate_count",
    "seed",
    "top_p",
    "top_k",
    "presence_penalty",
    "frequency_penalty",
    "response_mime_type",
    "response_schema",
    "thinking_config",
}


def _snake(name: str) -> str:
    """Proto JSON accepts lowerCamel and snake_case field names alike."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _fields(obj: dict[str, Any], allowed: set[str], where: str) -> dict[str, Any] | str:
    out: dict[str, Any] = {}
    for name, value in obj.items():
        if _snake(name) not in allowed:
            at = f" at '{where}'" if where else ""
            return f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.'
        out[_snake(name)] = value
    return out


def _parts_text(content: Any, where: str) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise ValueError(
            f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty."
        )
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict))


def _validate(body: Any, model: str, max_candidates: int) -> tuple[ParsedRequest, int] | str:
    """The request and its input size in characters, or the API's error message."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received. Unexpected token."
    top = _fields(body, _TOP, "")
    if isinstance(top, str):
        return top
    config = _fields(top.get("generation_config") or {}, _CONFIG, "generation_config")
    if isinstance(config, str):
        return config
    contents = top.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    prompt, size = "", 0
    try:
        for i, content in enumerate(contents):
            role = content.get("role", "user") if isinstance(content, dict) else None
            if role not in ("user", "model"):
                return "Please use a valid role: user, model."
            text = _parts_text(content, f"contents[{i}]")
            size += len(text)
            if role == "user":
                prompt = text
        if top.get("system_instruction") is not None:
            size += len(_parts_text(top["system_instruction"], "system_instruction"))
    except ValueError as exc:
        return str(exc)
    n = config.get("candidate_count", 1)
    if not isinstance(n, int) or n < 1:
        return "* GenerateContentRequest.generation_config.candidate_count: must be positive"
    if n > max_candidates:
        if max_candidates == 1:
            return "Multiple candidates is not enabled for this model"
        return f"candidateCount must be at most {max_candidates} for this model"
    max_tokens = config.get("max_output_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        return "* GenerateContentRequest.generation_config.max_output_tokens: must be positive"
    stops = config.get("stop_sequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        return "* GenerateContentRequest.generation_config.stop_sequences: must be strings"
    if len(stops) > 5:
        return "* GenerateContentRequest.generation_config.stop_sequences: at most 5 allowed"
    return ParsedRequest(prompt, model, n, max_tokens, stops), size


class FakeGeminiServer(FakeOpenAIServer):
    """In-process aiohttp server faking Gemini; `base_url` has no /v1beta suffix.

    `max_candidates` is the model's candidateCount limit (1 mimics models that reject
    multiple candidates); `config.ignore_n` returns one candidate whatever was asked.
    """

    fault_kinds = FAULT_KINDS
    base_path = ""
    max_candidates = 8
    last_body: Any
    last_headers: dict[str, str]
    last_model: str

    def reset_stats(self) -> None:
        """Zero the counters (the parent's) and forget the last request."""
        super().reset_stats()
        self.last_body = None
        self.last_headers = {}
        self.last_model = ""

    def _add_routes(self, app: web.Application) -> None:
        # The parent's counting wrapper calls `self._complete`, overridden below.
        app.router.add_post("/v1beta/models/{target}", partial(self._counted, chat=True))

    async def __aenter__(self) -> FakeGeminiServer:
        await self.start()
        return self

    # -- wire format -------------------------------------------------------------------------

    @staticmethod
    def _error(
        status: int, label: str, message: str, *details: dict[str, Any], headers: Any = None
    ) -> web.Response:
        error: dict[str, Any] = {"code": status, "message": message, "status": label}
        if details:
            error["details"] = list(details)
        return json_response(status, {"error": error}, headers)

    def _key(self, request: web.Request) -> str | None:
        return request.headers.get("x-goog-api-key") or request.query.get("key")

    def _authorized(self, request: web.Request) -> bool:
        wanted = self.config.require_api_key
        return wanted is None or self._key(request) == wanted

    def _unauthorized(self) -> web.Response:
        info = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }
        msg = "API key not valid. Please pass a valid API key."
        return self._error(400, "INVALID_ARGUMENT", msg, info)

    async def _complete(self, request: web.Request, chat: bool) -> web.StreamResponse:
        cfg = self.config
        model, _, method = request.match_info["target"].rpartition(":")
        raw = await request.read()
        self.last_headers, self.last_model = dict(request.headers), model
        try:
            self.last_body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.last_body = None
        checked = _validate(self.last_body, model, self.max_candidates)
        if not isinstance(checked, str):
            self.attempt_counts[checked[0].prompt] += 1
        if not self._key(request):
            msg = (
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API."
            )
            return self._fail("auth", self._error(403, "PERMISSION_DENIED", msg))
        if not self._authorized(request):
            return self._fail("auth", self._unauthorized())
        if method != "generateContent" or not model:
            msg = f"Method {method!r} is not found for models/{model}."
            return self._fail("not_found", self._error(404, "NOT_FOUND", msg))
        if isinstance(checked, str):
            return self._fail("bad_request", self._error(400, "INVALID_ARGUMENT", checked))
        req, size = checked
        if cfg.rpm is not None and (wait := self._take_token(cfg.rpm)) is not None:
            return self._fail("rate_limit", self._rate_limited(f"{math.ceil(wait)}s"))
        kind = self._next_fault()
        delay = self._sample_latency() if kind is None or kind in _SLOW_FAULTS else 0.0
        if delay > 0.0:
            await asyncio.sleep(delay)
        if kind is not None:
            return await self._gemini_fault(kind, request, req, size)
        self.accepted += 1
        self.prompt_counts[req.prompt] += 1
        self.latencies.append(delay)
        return json_response(200, self._response(req, size))

    def _rate_limited(self, retry_delay: str | None, headers: Any = None) -> web.Response:
        msg = "You exceeded your current quota, please check your plan and billing details."
        details = []
        if retry_delay is not None:
            retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo"}
            details.append({**retry, "retryDelay": retry_delay})
        return self._error(429, "RESOURCE_EXHAUSTED", msg, *details, headers=headers)

    def _response(self, req: ParsedRequest, size: int) -> dict[str, Any]:
        text, finish = cut_answer(self.config.responder(req.prompt), req)
        n = 1 if self.config.ignore_n else req.n
        candidates: list[dict[str, Any]] = []
        for i in range(n):
            cand: dict[str, Any] = {
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": "MAX_TOKENS" if finish == "length" else "STOP",
            }
            if i:  # proto3 JSON leaves out zero values, and so does the real API
                cand["index"] = i
            candidates.append(cand)
        self._ids += 1
        prompt_tokens, out_tokens = max(1, size // 4), max(1, len(text) // 4) * n
        self.billed_prompt_tokens += prompt_tokens
        self.billed_completion_tokens += out_tokens
        return {
            "candidates": candidates,
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": out_tokens,
                "totalTokenCount": prompt_tokens + out_tokens,
            },
            "modelVersion": req.model,
            "responseId": f"fake{self._ids}",
        }

    async def _gemini_fault(
        self, kind: str, request: web.Request, req: ParsedRequest, size: int
    ) -> web.StreamResponse:
        if kind in _STATUS_ERRORS:
            status, label, message = _STATUS_ERRORS[kind]
            return self._fail(kind, self._error(status, label, message))
        if kind == "bad_key":
            return self._fail(kind, self._unauthorized())
        if kind == "404":
            msg = f"models/{req.model} is not found for API version v1beta."
            return self._fail(kind, self._error(404, "NOT_FOUND", msg))
        if kind.startswith("429"):
            delay = format(self.config.retry_after_s, "g")
            if kind == "429":
                return self._fail(kind, self._rate_limited(f"{delay}s"))
            headers = {"Retry-After": delay} if kind == "429_header" else None
            return self._fail(kind, self._rate_limited(None, headers))
        self.errors_by_kind[kind] += 1
        if kind in ("drop", "hang"):
            if kind == "hang":
                await self._stopping.wait()
            return self._drop(request)
        payload = self._response(req, size)
        if kind == "truncated":
            raw = orjson.dumps(payload)
            return web.Response(body=raw[: len(raw) // 2], content_type="application/json")
        if kind in USAGE_FAULTS:
            fields = ("promptTokenCount", "candidatesTokenCount")
            self.billed_prompt_tokens += spoil_usage(kind, payload, "usageMetadata", fields)
            return json_response(200, payload)
        if kind == "safety":
            for cand in payload["candidates"]:
                cand["content"] = {"role": "model"}
                cand["finishReason"] = "SAFETY"
        else:
            del payload["candidates"]
            if kind == "blocked":
                payload["promptFeedback"] = {"blockReason": "SAFETY"}
        return json_response(200, payload)
