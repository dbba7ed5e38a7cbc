"""Base URLs and secret scrubbing, without a server: what is sent and what may be shown."""

from __future__ import annotations

import pytest

from opro.providers.errors import ConfigurationError, TransientError
from opro.providers.http import scrubbed
from opro.providers.urls import parse_base_url, redact_url, scrub
from opro.testing.fake_openai import ECHO_FORMS

KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0"


@pytest.mark.parametrize(
    "url",
    [
        "http://user:secret@127.0.0.1:8000/v1",
        "https://:secret@api.example.com/v1",
        "http://user:se/cret@host/v1",  # a "/" in the password: urlsplit misreads it
        "http://user:se@cret@host/v1",
    ],
)
def test_credentials_in_a_base_url_are_refused_without_showing_them(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_base_url(url, key_env="the OPENAI_API_KEY environment variable")
    message = str(caught.value)
    assert "cret" not in message and "\n" not in message
    assert "OPENAI_API_KEY" in message and "credentials" in message


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://host/v1", "must start with http"),
        ("http:///v1", "names no host"),
        ("http://host:99999/v1", "not a valid URL"),
        ("http://host:port/v1?api_key=zzzzsecret", "not a valid URL"),
    ],
)
def test_unusable_base_urls_are_one_line(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as caught:
        parse_base_url(url, key_env="X")
    assert "zzzzsecret" not in str(caught.value)


def test_the_query_string_follows_every_request_path() -> None:
    base = parse_base_url("https://gw.example/openai/v1/?api-version=2024-06-01", key_env="X")
    assert base.url == "https://gw.example/openai/v1?api-version=2024-06-01"
    assert base.join("/chat/completions") == (
        "https://gw.example/openai/v1/chat/completions?api-version=2024-06-01"
    )
    assert base.join("/completions").endswith("/v1/completions?api-version=2024-06-01")
    assert base.safe == base.url and base.secrets == ()
    anthropic = parse_base_url("http://proxy/v1?x=1", key_env="X", strip_suffix="/v1")
    assert anthropic.join("/v1/messages") == "http://proxy/v1/messages?x=1"


def test_a_key_in_the_query_is_sent_but_never_shown() -> None:
    base = parse_base_url("http://gw/v1?api-version=1&key=Q%2Bsecret99", key_env="X")
    assert base.join("/completions") == "http://gw/v1/completions?api-version=1&key=Q%2Bsecret99"
    assert base.safe == "http://gw/v1?api-version=1&key=***"
    assert set(base.secrets) == {"Q%2Bsecret99", "Q+secret99"}
    # Two keys on one gateway are two accounts: separate connections, never the key itself.
    other = parse_base_url("http://gw/v1?api-version=1&key=other", key_env="X")
    assert base.identity() != other.identity() and "secret" not in base.identity()


def test_ordinary_urls_are_left_byte_for_byte() -> None:
    for url in ("http://127.0.0.1:8000/v1", "https://api.openai.com/v1?api-version=2024-06-01"):
        assert redact_url(url) == url
        assert parse_base_url(url, key_env="X").safe == url


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("see http://u:hunter2pass@h/v1 now", "hunter2pass"),
        ("POST http://h/v1?api-version=1&api_key=zzsecretzz failed", "zzsecretzz"),
        ("token=zzsecretzz&x=1", "zzsecretzz"),
        ("https://h/x?access_token=zzsecretzz", "zzsecretzz"),
        ("subscription-key=zzsecretzz", "zzsecretzz"),
    ],
)
def test_urls_and_key_like_parameters_are_scrubbed(text: str, leak: str) -> None:
    out = scrub(text)
    assert leak not in out and "***" in out


@pytest.mark.parametrize("form", sorted(ECHO_FORMS))
def test_a_key_echoed_in_any_form_is_scrubbed(form: str) -> None:
    echoed = ECHO_FORMS[form](KEY)
    out = scrub(f"Incorrect API key provided: {echoed}. See https://x.example/keys.", [KEY])
    assert echoed not in out and KEY.lower() not in out.lower()
    assert out.startswith("Incorrect API key provided: ***")
    assert "https://x.example/keys" in out  # the rest of the message survives


@pytest.mark.parametrize(
    "shown",
    [
        KEY[:4] + "****",
        "****" + KEY[-4:],
        KEY[:7] + "..." + KEY[-5:],
        KEY[5:20],  # a bare run from the middle
        KEY.swapcase(),
    ],
)
def test_partial_and_recased_keys_are_scrubbed(shown: str) -> None:
    out = scrub(f"key {shown} rejected", [KEY])
    assert out == "key *** rejected"


def test_ordinary_text_is_left_alone() -> None:
    text = "Loading... done; max_tokens=5, sk-*** and api-version=2024-06-01 (retry in 3s)"
    assert scrub(text, [KEY]) == text


def test_scrubbed_errors_keep_their_class_and_status() -> None:
    err = scrubbed(TransientError(f"boom {KEY.upper()}", status=503), KEY)
    assert isinstance(err, TransientError) and err.status == 503
    assert str(err) == err.message == "boom ***"
