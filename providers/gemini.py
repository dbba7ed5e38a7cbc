"""`google/<model>` (alias `gemini/`): the Gemini API's generateContent over aiohttp.

A `Request` becomes one POST to `{base}/v1beta/models/{model}:generateContent` with the
key in the `x-goog-api-key` header (never in the URL, where it would reach logs and
exception texts). Chat roles map to Gemini's "user"/"model", system messages to
`systemInstruction`, decoding parameters to `generationConfig` (`n` as `candidateCount`).

What counts as an answer: a candidate the model stopped for safety, recitation or length
without any text is a real (empty) answer, and so is a prompt blocked outright
(`promptFeedback.blockReason`, no candidates); a 200 that is unreadable, or has a
candidate with neither text nor such a reason, is a server fault and is retried. Errors
are Google's `{"error": {"code", "message", "status", "details"}}` bodies; a 429's
`google.rpc.RetryInfo.retryDelay` says how long to wait.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import orjson

from opro.providers.base import HttpPool, HttpProvider
from opro.providers.errors import (
    AuthenticationError,
    BadRequestError,
    ProviderError,
    RateLimitError,
    TransientError,
)
from opro.providers.http import (
    RawResponse,
    classify_status,
    parse_duration,
    retry_after_seconds,
)
from opro.providers.types import Completion, Request, Usage
from opro.providers.usage import reported_usage, token_count

GEMINI_DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"

# Finish reasons after which a candidate without text is still the model's answer.
_ANSWERED_EMPTY = {
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "content_filter",
    "MAX_TOKENS": "length",  # thinking models can spend every token before any text
}
_FINISH = {"STOP": "stop", **_ANSWERED_EMPTY}
_BAD_KEY_REASONS = {"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"}
# The 400 a model without multi-candidate support answers to candidateCount > 1.
_NO_CANDIDATES = re.compile(r"candidate", re.IGNORECASE)
_BAD_KEY_TEXT = re.compile(r"API key (not valid|not found|expired)", re.IGNORECASE)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _usage(meta: Any) -> Usage | None:
    """usageMetadata as a `Usage`; None (the engine bills the worst case) when unusable.

    proto3 JSON leaves out zero counts, so an absent output or thinking count is 0; an
    absent prompt count is not (no call reads zero tokens). Thinking tokens are billed as
    output, so they count towards the budget.
    """
    if not isinstance(meta, dict):
        return None
    prompt = reported_usage(meta.get("promptTokenCount"), meta.get("candidatesTokenCount", 0))
    thoughts = token_count(meta.get("thoughtsTokenCount", 0))
    if prompt is None or thoughts is None:
        return None
    return Usage(prompt.input_tokens, prompt.output_tokens + thoughts)


def _error_object(body: bytes) -> dict[str, Any]:
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    if isinstance(data, list) and data:  # some Google front ends wrap the error in a list
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    return err if isinstance(err, dict) else {}


def _details(err: Mapping[str, Any], type_suffix: str) -> list[dict[str, Any]]:
    details = err.get("details")
    if not isinstance(details, list):
        return []
    return [
        d
        for d in details
        if isinstance(d, dict) and str(d.get("@type", "")).endswith(f"google.rpc.{type_suffix}")
    ]


def retry_delay_seconds(body: bytes) -> float | None:
    """`retryDelay` of the body's `google.rpc.RetryInfo` ("7s", "1.5s"), if any."""
    for info in _details(_error_object(body), "RetryInfo"):
        delay = parse_duration(str(info.get("retryDelay", "")))
        if delay is not None:
            return delay
    return None


def classify_gemini_error(
    status: int, body: bytes, headers: Mapping[str, str], *, where: str
) -> ProviderError:
    """Map a non-2xx Gemini response onto the engine's error classes."""
    err = _error_object(body)
    base = classify_status(status, body, headers, where=where)
    label = err.get("status")
    message = base.message
    if isinstance(label, str) and label:
        message = message.replace(f"HTTP {status}:", f"HTTP {status} {label}:", 1)
    reasons = {str(d.get("reason")) for d in _details(err, "ErrorInfo")}
    if status in (401, 403) or reasons & _BAD_KEY_REASONS:
        # Google answers a wrong key with 400 INVALID_ARGUMENT "API key not valid".
        return AuthenticationError(message + " (check the API key)", status=status)
    if status == 400 and _BAD_KEY_TEXT.search(str(err.get("message", ""))):
        return AuthenticationError(message + " (check the API key)", status=status)
    if status == 429:
        delay = retry_delay_seconds(body)
        if delay is None:
            delay = retry_after_seconds(headers)
        return RateLimitError(message, status=status, retry_after=delay)
    if status == 404:
        return BadRequestError(message + " (is the model name right?)", status=status)
    base.message = message
    base.args = (message,)
    return base


class GeminiProvider(HttpProvider):
    """One Gemini model behind the Generative Language API (or a proxy speaking it)."""

    name = "google"
    default_base_url = GEMINI_DEFAULT_BASE_URL
    base_url_env = "GEMINI_BASE_URL"
    key_envs = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    missing_key = (
        "GEMINI_API_KEY is not set: export GEMINI_API_KEY=<your key> "
        "(GOOGLE_API_KEY works too), or pass api_key="
    )
    strip_suffix = "/v1beta"

    def __init__(
        self,
        model: str,
        *,
        http: HttpPool,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        model = model.removeprefix("models/")
        super().__init__(model, http=http, base_url=base_url, api_key=api_key, timeout=timeout)
        # Flips to False when the model rejects candidateCount > 1 or returns fewer.
        self.n_supported = True
        self._path = f"/v1beta/models/{quote(self.model, safe='-._~')}:generateContent"

    def headers(self, api_key: str | None) -> dict[str, str]:
        # The key travels in a header, never in the URL (where logs and errors would show it).
        headers = {"content-type": "application/json"}
        if api_key:
            headers["x-goog-api-key"] = api_key
        return headers

    def classify(self, resp: RawResponse) -> ProviderError:
        return classify_gemini_error(resp.status, resp.body, resp.headers, where=self.where)

    @property
    def supports_n(self) -> bool:
        return self.n_supported

    def body(self, request: Request) -> dict[str, Any]:
        """The JSON body for `request` (public so tests can check the mapping)."""
        messages = request.as_messages()
        config: dict[str, Any] = {
            "temperature": request.temperature,
            "maxOutputTokens": request.max_tokens,
        }
        if request.stop:
            config["stopSequences"] = list(request.stop)
        if request.n > 1 and self.n_supported:
            config["candidateCount"] = request.n
        if request.seed is not None:
            config["seed"] = request.seed
        body: dict[str, Any] = {
            "contents": [
                {
                    "role": "model" if m.role == "assistant" else "user",
                    "parts": [{"text": m.content}],
                }
                for m in messages
                if m.role != "system"
            ],
            "generationConfig": config,
        }
        system = [{"text": m.content} for m in messages if m.role == "system"]
        if system:
            body["systemInstruction"] = {"parts": system}
        return body

    async def complete(self, request: Request) -> Completion:
        body = self.body(request)
        resp = await self.post(self._path, body)
        if resp.status >= 300:
            err = self.failure(resp)
            if (
                isinstance(err, BadRequestError)
                and "candidateCount" in body["generationConfig"]
                and _NO_CANDIDATES.search(str(_error_object(resp.body).get("message", "")))
            ):
                # This model samples one candidate per call: ask for one and let the
                # engine make the other calls (it splits when fewer texts come back).
                # Decided on what this call sent, since concurrent calls race here.
                self.n_supported = False
                return await self.complete(replace(request, n=1))
            raise err
        completion = self._parse(resp.body, self.where, request.n)
        if len(completion.texts) < request.n:
            self.n_supported = False
        return completion

    @staticmethod
    def _parse(raw: bytes, where: str, n: int) -> Completion:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise TransientError(f"{where}: response is not valid JSON ({len(raw)} bytes)") from exc
        if not isinstance(data, dict):
            raise TransientError(f"{where}: response is not a JSON object")
        reported = _usage(data.get("usageMetadata"))
        usage, known = reported or Usage(), reported is not None
        candidates = data.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            feedback = data.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                # The prompt itself was refused: every sample would be, so answer all n.
                return Completion(("",) * n, usage, ("content_filter",) * n, usage_known=known)
            raise TransientError(f"{where}: response has no candidates")
        texts: list[str] = []
        finish: list[str | None] = []
        for cand in sorted(
            candidates, key=lambda c: _int(c.get("index")) if isinstance(c, dict) else 0
        ):
            text, reason = GeminiProvider._candidate(cand)
            if text is None:
                raise TransientError(f"{where}: a candidate has no text (finishReason {reason!r})")
            texts.append(text)
            finish.append(_FINISH.get(reason, reason.lower()) if reason else None)
        return Completion(tuple(texts), usage, tuple(finish), usage_known=known)

    @staticmethod
    def _candidate(cand: Any) -> tuple[str | None, str | None]:
        """(text or None when unusable, raw finishReason) of one candidate."""
        if not isinstance(cand, dict):
            return None, None
        reason = cand.get("finishReason")
        reason = reason if isinstance(reason, str) else None
        content = cand.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        texts = [
            p["text"]
            for p in (parts if isinstance(parts, list) else [])
            if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought")
        ]
        if texts:
            return "".join(texts), reason
        if reason in _ANSWERED_EMPTY:
            return "", reason
        return None, reason
