"""The provider registry: each provider declares its own options; any other is refused."""

from __future__ import annotations

import math
from typing import Any

import pytest

from opro.errors import SettingsError
from opro.providers.openai import OpenAIProvider
from opro.providers.registry import PROVIDERS, Connection, create_provider, provider_options
from opro.providers.simulated import SimulatedProvider

LOCAL_SERVER = Connection(base_url="http://127.0.0.1:9/v1")


@pytest.mark.parametrize(
    ("spec", "option", "takes"),
    [
        ("simulated/x", "n_ctx", "'simulated' takes latency_s"),
        ("anthropic/claude-x", "api", "'anthropic' takes no provider options"),
        ("google/gemini-x", "latency_s", "'google' takes no provider options"),
        ("openai/gpt-x", "n_threads", "'openai' takes api"),
        ("local/smollm2", "timeout", "'local' takes api, n_ctx, n_threads"),
    ],
)
def test_an_unknown_option_names_the_provider_and_what_it_takes(
    spec: str, option: str, takes: str
) -> None:
    options: dict[str, Any] = {option: 1}
    with pytest.raises(SettingsError) as info:
        create_provider(spec, LOCAL_SERVER, **options)
    message = str(info.value)
    assert message.startswith(f"{spec}: unknown provider option {option};")
    assert takes in message and "\n" not in message


def test_several_unknown_options_are_named_together() -> None:
    with pytest.raises(SettingsError, match=r"unknown provider options api, n_ctx;"):
        provider_options("simulated/x", {"n_ctx": 1, "api": "chat", "latency_s": 1.0})


def test_an_option_given_as_none_means_the_providers_default() -> None:
    provider = create_provider("anthropic/claude-x", LOCAL_SERVER, api=None, n_ctx=None)
    assert provider.spec == "anthropic/claude-x"


def test_declared_options_reach_the_provider() -> None:
    openai = create_provider("openai/gpt-x", LOCAL_SERVER, api="completions")
    assert isinstance(openai, OpenAIProvider) and openai.api == "completions"
    simulated = create_provider("simulated/x", latency_s=2.5)
    assert isinstance(simulated, SimulatedProvider) and simulated.latency_s == 2.5


@pytest.mark.parametrize("latency", [math.nan, math.inf, -1.0, "1"])
def test_simulated_latency_is_a_checked_number(latency: object) -> None:
    with pytest.raises(SettingsError, match="latency_s"):
        create_provider("simulated/x", latency_s=latency)


def test_every_provider_declares_its_options() -> None:
    for name, entry in PROVIDERS.items():
        assert all(isinstance(o, str) and o.isidentifier() for o in entry.options), name
        assert not {"base_url", "api_key", "timeout"} & set(entry.options), name
