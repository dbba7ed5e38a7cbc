"""Error classification and header parsing: the vendor-to-engine mapping, without a server."""

from __future__ import annotations

import time
from email.utils import formatdate

import aiohttp
import orjson
import pytest

from opro.providers.errors import (
    AuthenticationError,
    BadRequestError,
    FatalError,
    RateLimitError,
    TransientError,
)
from opro.providers.http import (
    classify_exception,
    classify_status,
    parse_duration,
    parse_rate_limit_headers,
    retry_after_seconds,
)
from opro.providers.types import RateLimitInfo


def body(message: str, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "x", "code": code}})


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (429, "rate_limit_exceeded", RateLimitError),
        (429, "insufficient_quota", FatalError),
        (401, "invalid_api_key", AuthenticationError),
        (403, None, AuthenticationError),
        (400, None, BadRequestError),
        (404, "model_not_found", BadRequestError),
        (422, None, BadRequestError),
        (408, None, TransientError),
        (500, None, TransientError),
        (502, None, TransientError),
        (503, None, TransientError),
        (529, None, TransientError),
    ],
)
def test_status_classification(status: int, code: str | None, cls: type) -> None:
    err = classify_status(status, body("nope", code), {}, where="m")
    assert type(err) is cls
    assert err.status == status
    assert "nope" in err.message and f"HTTP {status}" in err.message


def test_429_carries_the_servers_retry_hint() -> None:
    err = classify_status(
        429, body("slow"), {"retry-after-ms": "250", "retry-after": "1"}, where="m"
    )
    assert isinstance(err, RateLimitError) and err.retry_after == pytest.approx(0.25)
    err = classify_status(429, b"", {}, where="m")
    assert isinstance(err, RateLimitError) and err.retry_after is None


def test_non_json_error_bodies_are_quoted_not_parsed() -> None:
    err = classify_status(502, b"<html>Bad Gateway</html>", {}, where="m")
    assert isinstance(err, TransientError) and "Bad Gateway" in err.message


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "junk", "retry-after": "2"}, 2.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_seconds(headers) == seconds


def test_retry_after_as_http_date() -> None:
    when = formatdate(time.time() + 30, usegmt=True)
    value = retry_after_seconds({"retry-after": when})
    assert value is not None and 25 <= value <= 31


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("20ms", 0.02),
        ("6m0s", 360.0),
        ("1h2m3s", 3723.0),
        ("0.5s", 0.5),
        ("2", 2.0),
        ("", None),
        ("later", None),
        ("5x", None),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_rate_limit_headers() -> None:
    info = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-requests": "3000",
            "x-ratelimit-remaining-requests": "2999",
            "x-ratelimit-reset-requests": "20ms",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert info == RateLimitInfo(
        limit_requests=3000,
        remaining_requests=2999,
        reset_requests_s=0.02,
        remaining_tokens=0,
        reset_tokens_s=360.0,
    )
    assert parse_rate_limit_headers({"content-type": "application/json"}) is None


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("cut"),
        ConnectionResetError(),
        aiohttp.ClientOSError(),
    ],
)
def test_transport_failures_are_transient(exc: BaseException) -> None:
    assert isinstance(classify_exception(exc, where="m", timeout=5), TransientError)


def test_unexpected_exceptions_are_not_swallowed() -> None:
    assert classify_exception(KeyError("bug"), where="m", timeout=5) is None


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "nan"}, None),
        ({"retry-after": "-5"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "1e999"}, None),  # overflows to infinity
        ({"retry-after": "1e300"}, 1e300),  # absurd but finite: the engine refuses to wait
        ({"retry-after": "100000"}, 100000.0),
        ({"retry-after-ms": "nan", "retry-after": "2"}, 2.0),
        ({"retry-after-ms": "-1000", "retry-after": "2"}, 2.0),
        ({"retry-after": "Tue, 99 Foo 2024 garbage"}, None),
    ],
)
def test_absurd_retry_after_values_are_not_waits(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after_seconds(headers) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("99999h", 99999 * 3600.0),
        ("nan", None),
        ("-3s", None),
        ("-3", None),
        ("inf", None),
        ("9" * 400 + "h", None),  # overflows to infinity
        ("1e300", 1e300),
        ("3 hours", None),
    ],
)
def test_absurd_reset_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_absurd_rate_limit_counts_are_ignored() -> None:
    info = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-requests": "inf",  # used to raise OverflowError
            "x-ratelimit-remaining-requests": "-1",
            "x-ratelimit-remaining-tokens": "nan",
            "x-ratelimit-reset-tokens": "1s",
        }
    )
    assert info == RateLimitInfo(reset_tokens_s=1.0)
