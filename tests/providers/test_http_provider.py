"""What `HttpProvider` owns, checked once for every hosted vendor: base URL from argument,
environment or default; key from argument or environment; refusal without a key on the
vendor's own server; headers; connection key and cache identity without the key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest

import opro
from opro.providers.anthropic import AnthropicProvider
from opro.providers.base import HttpProvider
from opro.providers.gemini import GeminiProvider
from opro.providers.http import RawResponse
from opro.providers.openai import OpenAIProvider
from opro.providers.registry import Connection, create_provider

KEY = "sk-SENTINEL-4f1d2c8b9e"  # must never show up in identities or messages
OTHER_KEY = "sk-OTHER-0a9b8c7d6e"
PROXY = "http://proxy.local:8080"


@dataclass(frozen=True)
class Vendor:
    cls: type[HttpProvider]
    spec: str
    base_env: str
    key_env: str
    key_header: str
    identity: dict[str, Any]  # on the vendor's own server

    def __str__(self) -> str:
        return self.spec.partition("/")[0]


VENDORS = [
    Vendor(
        OpenAIProvider,
        "openai/m",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "Authorization",
        {"model": "openai/m", "api": "chat"},
    ),
    Vendor(
        AnthropicProvider,
        "anthropic/m",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_KEY",
        "x-api-key",
        {"model": "anthropic/m"},
    ),
    Vendor(
        GeminiProvider,
        "google/m",
        "GEMINI_BASE_URL",
        "GEMINI_API_KEY",
        "x-goog-api-key",
        {"model": "google/m"},
    ),
]

every_vendor = pytest.mark.parametrize("vendor", VENDORS, ids=str)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for vendor in VENDORS:
        monkeypatch.delenv(vendor.base_env, raising=False)
        monkeypatch.delenv(vendor.key_env, raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)


def build(vendor: Vendor, base_url: str | None = None, api_key: str | None = None) -> Any:
    provider = create_provider(vendor.spec, Connection(base_url=base_url, api_key=api_key))
    assert isinstance(provider, vendor.cls) and isinstance(provider, HttpProvider)
    return provider


def sent_key(vendor: Vendor, provider: Any) -> str | None:
    value = provider._headers.get(vendor.key_header)
    return None if value is None else value.rpartition(" ")[2]  # "Bearer <key>" or "<key>"


@every_vendor
def test_default_server_with_the_key_from_the_environment(
    vendor: Vendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(vendor.key_env, KEY)
    provider = build(vendor)
    assert provider.base_url == vendor.cls.default_base_url
    assert sent_key(vendor, provider) == KEY
    assert provider.cache_identity() == vendor.identity  # no base_url on the default


@every_vendor
def test_no_key_for_the_vendors_own_server_is_refused_by_name(vendor: Vendor) -> None:
    with pytest.raises(opro.ConfigurationError) as info:
        build(vendor)
    message = str(info.value)
    assert f"{vendor.key_env} is not set" in message and "\n" not in message
    with pytest.raises(opro.ConfigurationError, match=vendor.key_env):
        build(vendor, api_key="")  # an empty key is no key, and the environment is not read


@every_vendor
def test_another_server_needs_no_key_and_sends_none(vendor: Vendor) -> None:
    provider = build(vendor, base_url=PROXY)
    assert sent_key(vendor, provider) is None
    assert provider.cache_identity() == {**vendor.identity, "base_url": PROXY}
    assert provider.connection_key().endswith("|-")


@every_vendor
def test_base_url_argument_then_environment_then_default(
    vendor: Vendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(vendor.key_env, KEY)
    monkeypatch.setenv(vendor.base_env, "http://from-env.local")
    assert build(vendor).base_url == "http://from-env.local"
    assert build(vendor, base_url=PROXY).base_url == PROXY


@every_vendor
def test_key_argument_then_environment(vendor: Vendor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(vendor.key_env, OTHER_KEY)
    assert sent_key(vendor, build(vendor, api_key=KEY)) == KEY
    assert sent_key(vendor, build(vendor)) == OTHER_KEY
    assert sent_key(vendor, build(vendor, base_url=PROXY, api_key="")) is None


@every_vendor
def test_the_key_is_in_no_identity_and_no_message(vendor: Vendor) -> None:
    one = build(vendor, base_url=PROXY, api_key=KEY)
    two = build(vendor, base_url=PROXY, api_key=OTHER_KEY)
    # One cache namespace, two connections (limits are per account), no key in either.
    assert one.cache_identity() == two.cache_identity()
    assert one.connection_key() != two.connection_key()
    for shown in (one.connection_key(), repr(one.cache_identity()), one.where):
        assert KEY not in shown and KEY.lower() not in shown.lower()
    echo = orjson.dumps({"error": {"message": f"bad key {KEY} ({KEY[:6]}...{KEY[-4:]})"}})
    error = one.failure(RawResponse(401, echo, {}))
    assert isinstance(error, opro.AuthenticationError)
    assert KEY not in error.message and KEY[-4:] not in error.message
    assert "***" in error.message and PROXY in error.message


@every_vendor
def test_credentials_in_the_base_url_are_refused_pointing_at_the_key_variable(
    vendor: Vendor,
) -> None:
    with pytest.raises(opro.ConfigurationError) as info:
        build(vendor, base_url=f"http://user:{KEY}@proxy.local")
    assert vendor.key_env in str(info.value) and KEY not in str(info.value)


@every_vendor
def test_a_key_in_the_base_url_query_is_sent_but_kept_out_of_identities(vendor: Vendor) -> None:
    provider = build(vendor, base_url=f"{PROXY}/?key={KEY}")
    assert KEY in provider._base.url  # sent
    assert KEY not in repr(provider.cache_identity()) and KEY not in provider.connection_key()
    assert KEY not in provider.where
