"""`Engine.model()`: shared settings in typed groups, provider options to the provider, and
slow provider set-up awaited off the event loop before the first cache key."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import opro
from opro.caches.memory import MemoryCache
from opro.engine.engine import Engine
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Decoding, Model
from opro.engine.retry import RetryPolicy
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


class SlowSetup(SimulatedProvider):
    """A provider whose identity needs set-up that must run before any cache key."""

    def __init__(self) -> None:
        super().__init__("slow")
        self.prepared = 0

    async def prepare(self) -> None:
        await asyncio.sleep(0)
        self.prepared += 1

    def cache_identity(self) -> dict[str, Any]:
        assert self.prepared, "the cache identity was read before prepare() was awaited"
        return super().cache_identity()


def _model(provider: SlowSetup) -> Model:
    limiter = ConnectionLimiter(LimitConfig(), name="slow")
    return Model(provider, limiter=limiter, retry=RetryPolicy(), cache=MemoryCache())


class AnyGrader:
    version = "test-1"

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        return True


async def test_evaluate_and_generate_await_prepare_before_the_first_key() -> None:
    scored = SlowSetup()
    async with Engine(cache=MemoryCache()) as engine:
        model = _model(scored)  # building a model reads no identity
        report = await engine.evaluate(
            ["a"], [opro.Example("1 + 1?", "2")], model, grader=AnyGrader()
        )
        assert report.totals.pairs == 1
        direct = _model(SlowSetup())
        await direct.generate(direct.request("q"))
        await direct.generate(direct.request("q"))
    assert scored.prepared == 1 and direct.provider.prepared == 1  # type: ignore[attr-defined]


class Counting(SimulatedProvider):
    def __init__(self) -> None:
        super().__init__("counting")
        self.reads = 0

    def cache_identity(self) -> dict[str, Any]:
        self.reads += 1
        return super().cache_identity()


def test_the_identity_is_read_at_the_first_key_not_when_the_model_is_built() -> None:
    provider = Counting()
    limiter = ConnectionLimiter(LimitConfig(), name="counting")
    model = Model(provider, limiter=limiter, retry=RetryPolicy(), cache=None)
    assert provider.reads == 0
    first = model.key(model.request("q"))
    assert model.key(model.request("q")) == first and provider.reads == 1
