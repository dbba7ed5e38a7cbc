"""`anthropic/<model>`: Anthropic's Messages API over aiohttp.

A `Request` becomes one POST to `{base}/v1/messages`: system messages move to the
top-level `system` field (the API has no "system" role), stop strings become
`stop_sequences`, and `n` and `seed` are dropped because the API has neither (the engine
emulates `n` with single calls, see `supports_n`). The answer is the concatenation of the
response's text blocks. Failures are mapped onto the engine's exception tree from the
status and Anthropic's `{"type": "error", "error": {...}}` body; the
`anthropic-ratelimit-*` headers of every response become a `RateLimitInfo`, so the
limiter can pause before the server starts answering 429.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from opro.providers.base import HttpProvider
from opro.providers.errors import FatalError, ProviderError, TransientError
from opro.providers.http import RawResponse, classify_status, count_header
from opro.providers.types import Completion, RateLimitInfo, Request, Usage
from opro.providers.usage import reported_usage

ANTHROPIC_DEFAULT_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"

# Anthropic's stop reasons in the vocabulary the other providers use.
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "refusal": "content_filter",
}


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def seconds_until(stamp: str | None, now: float | None = None) -> float | None:
    """Seconds from `now` (epoch) until an RFC 3339 timestamp; 0 when it has passed."""
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(stamp.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        return None  # RFC 3339 always carries an offset; a bare time is not one
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_anthropic_rate_limits(
    headers: Mapping[str, str], *, now: float | None = None
) -> RateLimitInfo | None:
    """Read `anthropic-ratelimit-*` headers; None when the server sends none.

    Tokens are limited per minute in up to three families (`tokens`, `input-tokens`,
    `output-tokens`); the one closest to exhaustion is reported, since that is the one
    that will make the next request fail.
    """
    prefix = "anthropic-ratelimit-"
    families: list[tuple[int | None, int | None, float | None]] = []
    for family in ("tokens", "input-tokens", "output-tokens"):
        limit = count_header(headers, f"{prefix}{family}-limit")
        remaining = count_header(headers, f"{prefix}{family}-remaining")
        reset = seconds_until(headers.get(f"{prefix}{family}-reset"), now)
        if (limit, remaining, reset) != (None, None, None):
            families.append((limit, remaining, reset))

    def pressure(item: tuple[int | None, int | None, float | None]) -> float:
        limit, remaining, _ = item
        if remaining is None:
            return 2.0
        return remaining / limit if limit else float(remaining > 0)

    tokens = min(families, key=pressure, default=(None, None, None))
    info = RateLimitInfo(
        limit_requests=count_header(headers, f"{prefix}requests-limit"),
        remaining_requests=count_header(headers, f"{prefix}requests-remaining"),
        reset_requests_s=seconds_until(headers.get(f"{prefix}requests-reset"), now),
        limit_tokens=tokens[0],
        remaining_tokens=tokens[1],
        reset_tokens_s=tokens[2],
    )
    return None if info == RateLimitInfo() else info


def classify_anthropic_error(
    status: int, body: bytes, headers: Mapping[str, str], *, where: str
) -> ProviderError:
    """The generic status mapping, plus the one 429 that waiting cannot fix."""
    err = classify_status(status, body, headers, where=where)
    if status == 429:
        try:
            data: Any = orjson.loads(body)
            details = data["error"]["details"]
            code = details.get("error_code") if isinstance(details, dict) else None
        except (orjson.JSONDecodeError, TypeError, KeyError):
            code = None
        if code == "enforced_spend_limit_reached":
            return FatalError(
                err.message + " (spend limit reached; retrying cannot help)", status=429
            )
    return err


class AnthropicProvider(HttpProvider):
    """One Claude model behind the Messages API (or a proxy speaking it)."""

    name = "anthropic"
    default_base_url = ANTHROPIC_DEFAULT_BASE_URL
    base_url_env = "ANTHROPIC_BASE_URL"
    key_envs = ("ANTHROPIC_API_KEY",)
    missing_key = (
        "ANTHROPIC_API_KEY is not set: export ANTHROPIC_API_KEY=<your key> "
        "(or pass api_key=, or base_url= for a proxy that needs none)"
    )
    # The SDKs' base URL has no /v1; accept one anyway instead of posting to /v1/v1.
    strip_suffix = "/v1"

    def headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def classify(self, resp: RawResponse) -> ProviderError:
        return classify_anthropic_error(resp.status, resp.body, resp.headers, where=self.where)

    @property
    def supports_n(self) -> bool:
        return False  # the Messages API returns one message per call

    def body(self, request: Request) -> dict[str, Any]:
        """The JSON body for `request` (public so tests can check the mapping)."""
        messages = request.as_messages()
        system = [m.content for m in messages if m.role == "system"]
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": [
                {"role": m.role, "content": m.content} for m in messages if m.role != "system"
            ],
            "temperature": request.temperature,
        }
        if system:
            body["system"] = "\n\n".join(system)
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        return body

    async def complete(self, request: Request) -> Completion:
        resp = await self.post("/v1/messages", self.body(request))
        if resp.status >= 300:
            raise self.failure(resp)
        text, finish, usage = self._parse(resp.body, self.where)
        return Completion(
            texts=(text,),
            usage=usage or Usage(),
            finish_reasons=(finish,),
            rate_limit=parse_anthropic_rate_limits(resp.headers),
            usage_known=usage is not None,
        )

    @staticmethod
    def _parse(raw: bytes, where: str) -> tuple[str, str | None, Usage | None]:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise TransientError(f"{where}: response is not valid JSON ({len(raw)} bytes)") from exc
        content = data.get("content") if isinstance(data, dict) else None
        if not isinstance(content, list):
            raise TransientError(f"{where}: response has no content")
        texts = [
            block["text"]
            for block in content
            if isinstance(block, dict)
            and block.get("type") == "text"
            and isinstance(block.get("text"), str)
        ]
        reason = data.get("stop_reason")
        if not texts and reason != "refusal":
            # A refusal with no text is the model's answer; anything else is a server fault.
            raise TransientError(f"{where}: response has no text block (stop_reason {reason!r})")
        usage = data.get("usage")
        counts = usage if isinstance(usage, dict) else {}
        finish = _FINISH.get(reason, reason) if isinstance(reason, str) else None
        # None (missing or malformed) keeps the answer; the engine bills the worst case.
        reported = reported_usage(counts.get("input_tokens"), counts.get("output_tokens"))
        return "".join(texts), finish, reported
