"""`Engine.model()`: shared settings in typed groups, provider options to the provider."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opro.engine.engine import Engine
from opro.engine.limits import LimitConfig
from opro.engine.model import Decoding
from opro.errors import SettingsError
from opro.providers.simulated import SimulatedProvider


def test_limits_and_decoding_arrive_as_given(tmp_path: Path) -> None:
    engine = Engine(cache_dir=tmp_path)
    limits = LimitConfig(max_concurrency=3, rpm=60.0, tpm=5000.0)
    decoding = Decoding(temperature=0.5, max_tokens=9, stop=["\n"], seed=4)  # type: ignore[arg-type]
    model = engine.model("simulated/x", limits=limits, decoding=decoding, latency_s=0.25)
    assert model.limiter.config == limits
    assert model.decoding == Decoding(0.5, 9, ("\n",), 4)  # a list of stops becomes a tuple
    request = model.request("p")
    assert (request.temperature, request.max_tokens, request.stop, request.seed) == (
        0.5,
        9,
        ("\n",),
        4,
    )
    assert isinstance(model.provider, SimulatedProvider) and model.provider.latency_s == 0.25
    default = engine.model("simulated/y")
    assert default.decoding == Decoding() and default.limiter.config == LimitConfig()


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("temperature", "decoding=Decoding(temperature=...)"),
        ("max_tokens", "decoding=Decoding(max_tokens=...)"),
        ("stop", "decoding=Decoding(stop=...)"),
        ("seed", "decoding=Decoding(seed=...)"),
        ("max_concurrency", "limits=LimitConfig(max_concurrency=...)"),
        ("rpm", "limits=LimitConfig(rpm=...)"),
        ("tpm", "limits=LimitConfig(tpm=...)"),
    ],
)
def test_a_shared_setting_given_loose_says_where_it_goes(
    name: str, group: str, tmp_path: Path
) -> None:
    loose: dict[str, Any] = {name: 1}
    with pytest.raises(SettingsError) as info:
        Engine(cache_dir=tmp_path).model("simulated/x", **loose)
    assert str(info.value) == f"{name} is not a provider option: pass {group}"


@pytest.mark.parametrize(
    "settings",
    [
        lambda: {"decoding": {"max_tokens": 8}},
        lambda: {"limits": Decoding()},
        lambda: {"decoding": Decoding(stop="\n")},  # type: ignore[arg-type]
    ],
    ids=["dict", "swapped", "bare-string-stop"],
)
def test_settings_of_the_wrong_type_are_one_line_errors(
    settings: Callable[[], dict[str, Any]], tmp_path: Path
) -> None:
    with pytest.raises(SettingsError) as info:
        Engine(cache_dir=tmp_path).model("simulated/x", **settings())
    assert "\n" not in str(info.value)


def test_provider_options_go_to_the_provider_and_unknown_ones_are_refused(
    tmp_path: Path,
) -> None:
    engine = Engine(cache_dir=tmp_path)
    server = "http://127.0.0.1:9/v1"
    model = engine.model("openai/gpt-x", base_url=server, api_key="k", api="completions")
    assert model.provider.cache_identity()["api"] == "completions"
    with pytest.raises(SettingsError, match=r"'anthropic' takes no provider options"):
        engine.model("anthropic/claude-x", base_url=server, api="chat")
    engine.model("anthropic/claude-x", base_url=server, api=None)  # None: not given
