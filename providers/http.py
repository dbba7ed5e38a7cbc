"""HTTP helpers shared by the vendor providers: error classification and header parsing.

Everything here is pure (status, headers and body in; an error class or numbers out), so
the mapping from a vendor's failure to the engine's retry decision is unit-testable
without a server.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from opro.providers.errors import (
    AuthenticationError,
    BadRequestError,
    FatalError,
    ProviderError,
    RateLimitError,
    TransientError,
)
from opro.providers.types import RateLimitInfo
from opro.providers.urls import scrub

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def _seconds(value: float) -> float | None:
    """A wait a server asked for, or None when it is no number of seconds (NaN, infinite,
    negative): such a header is ignored, as if absent. Long finite waits are kept; what to
    do about them is the engine's decision."""
    return value if math.isfinite(value) and value >= 0.0 else None


def parse_duration(text: str | None) -> float | None:
    """Parse OpenAI-style reset durations ("1s", "20ms", "6m0s", "0.5s") or bare seconds."""
    if not text:
        return None
    text = text.strip()
    try:
        return _seconds(float(text))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return _seconds(sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, else `Retry-After`.

    `Retry-After` may be delta-seconds or an HTTP date (RFC 9110); both are handled.
    """
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            seconds = _seconds(float(ms) / 1000.0)
        except ValueError:
            seconds = None
        if seconds is not None:
            return seconds
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return _seconds(float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def count_header(headers: Mapping[str, str], name: str) -> int | None:
    """A header's count, or None when absent or no number >= 0 ("nan", "-1", "inf")."""
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = int(float(value))
    except (ValueError, OverflowError):  # "nan", "inf", "1e999"
        return None
    return number if number >= 0 else None


def parse_rate_limit_headers(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """Read OpenAI-style `x-ratelimit-*` headers; None when the server sends none."""
    info = RateLimitInfo(
        limit_requests=count_header(headers, "x-ratelimit-limit-requests"),
        remaining_requests=count_header(headers, "x-ratelimit-remaining-requests"),
        reset_requests_s=parse_duration(headers.get("x-ratelimit-reset-requests")),
        limit_tokens=count_header(headers, "x-ratelimit-limit-tokens"),
        remaining_tokens=count_header(headers, "x-ratelimit-remaining-tokens"),
        reset_tokens_s=parse_duration(headers.get("x-ratelimit-reset-tokens")),
    )
    if info == RateLimitInfo():
        return None
    return info


def error_message(body: bytes, *, limit: int = 300) -> str:
    """The human part of an error body: `error.message` when it is JSON, else the text."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:limit].decode("utf-8", "replace").strip() or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("type") or err.get("code")
            if msg:
                return str(msg)[:limit]
        elif isinstance(err, str):
            return err[:limit]
    return str(data)[:limit]


def error_code(body: bytes) -> str:
    """`error.code` or `error.type` of a JSON error body ("" when there is none)."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("code") or err.get("type") or err.get("status") or "")
    return ""


def classify_status(
    status: int, body: bytes, headers: Mapping[str, str], *, where: str
) -> ProviderError:
    """Map a non-2xx response onto the engine's error classes."""
    message = f"{where}: HTTP {status}: {error_message(body)}"
    code = error_code(body)
    if status == 429:
        if code in {"insufficient_quota", "billing_hard_limit_reached"}:
            return FatalError(message + " (quota exhausted; retrying cannot help)", status=status)
        return RateLimitError(message, status=status, retry_after=retry_after_seconds(headers))
    if status in (401, 403):
        return AuthenticationError(message + " (check the API key)", status=status)
    if status in (408, 409, 425) or status >= 500:
        return TransientError(message, status=status)
    return BadRequestError(message, status=status)


def classify_exception(exc: BaseException, *, where: str, timeout: float) -> ProviderError | None:
    """Map transport failures onto `TransientError`; None for anything unexpected."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return TransientError(f"{where}: no answer within {timeout:g}s")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransientError(f"{where}: response body cut off ({exc.__class__.__name__})")
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError):
        return TransientError(f"{where}: connection failed ({exc.__class__.__name__}: {exc})")
    if isinstance(exc, aiohttp.ClientError):
        return TransientError(f"{where}: {exc.__class__.__name__}: {exc}")
    return None


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    body: bytes
    headers: Mapping[str, str]


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    payload: Any,
    *,
    headers: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - aiohttp's own per-request timeout, not a wrapper
    where: str,
) -> RawResponse:
    """POST `payload` as JSON and read the whole answer; transport failures are classified.

    Every vendor provider sends its requests through here, so a dropped connection, a cut
    body or a timeout means the same `TransientError` whoever the vendor is.
    """
    try:
        async with session.post(
            url,
            data=orjson.dumps(payload),
            headers=dict(headers),
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            return RawResponse(resp.status, await resp.read(), resp.headers)
    except Exception as exc:
        mapped = classify_exception(exc, where=where, timeout=timeout)
        if mapped is None:
            raise
        # aiohttp's texts may quote the URL; the caller's `where` is already safe.
        raise scrubbed(mapped, *header_secrets(headers)) from exc


def scrubbed(error: ProviderError, *secrets: str | None) -> ProviderError:
    """`error` with its message fit to show: `secrets` masked in whatever form a server
    echoed them (any case, partly masked), URLs without userinfo or key-like parameters."""
    message = scrub(error.message, secrets)
    if message != error.message:
        error.message = message
        error.args = (message,)
    return error


# Headers that carry credentials, for every vendor we speak to.
_SECRET_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """The credentials in request headers (a bearer token without its scheme word)."""
    found: list[str] = []
    for name, value in headers.items():
        if name.lower() in _SECRET_HEADERS and value:
            found.append(value)
            found.append(value.rpartition(" ")[2])
    return found
