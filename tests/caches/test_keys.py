"""Cache keys change with everything that can change an answer, and with nothing else."""

from __future__ import annotations

from dataclasses import replace

import pytest

from opro.caches.keys import PromptKeys, request_key
from opro.engine.engine import Engine
from opro.engine.limits import LimitConfig
from opro.engine.model import Decoding
from opro.providers.types import Message, Request

BASE = Request(prompt="Q: 1+1?\n\nA:", temperature=0.0, max_tokens=64, stop=("\n",), seed=None)
IDENTITY = {"model": "openai/gpt-x", "api": "chat"}


def key(request: Request = BASE, identity: dict[str, str] | None = None, sample: int = 0) -> str:
    return request_key(identity or IDENTITY, request, sample)


@pytest.mark.parametrize(
    "changed",
    [
        replace(BASE, prompt="Q: 1+2?\n\nA:"),
        replace(BASE, prompt="Q: 1+1?\nA:"),
        replace(BASE, temperature=0.7),
        replace(BASE, max_tokens=65),
        replace(BASE, stop=()),
        replace(BASE, stop=("\n", "Q:")),
        replace(BASE, seed=1),
        replace(BASE, n=2),
        Request(messages=(Message("user", "Q: 1+1?\n\nA:"),), max_tokens=64, stop=("\n",)),
    ],
)
def test_anything_that_changes_the_answer_changes_the_key(changed: Request) -> None:
    assert key(changed) != key()


def test_model_and_api_flavour_change_the_key() -> None:
    assert key(identity={"model": "openai/gpt-y", "api": "chat"}) != key()
    assert key(identity={"model": "openai/gpt-x", "api": "completions"}) != key()


def test_sample_index_matters_only_when_sampling() -> None:
    assert key(sample=3) == key(sample=0)
    hot = replace(BASE, temperature=1.0)
    assert key(hot, sample=3) != key(hot, sample=0)


def test_key_is_a_stable_sha256() -> None:
    assert key() == key(replace(BASE))
    assert len(key()) == 64 and int(key(), 16) >= 0


async def test_credentials_timeouts_and_limits_never_enter_the_key(tmp_path: object) -> None:
    async with Engine(use_cache=False) as engine:
        a = engine.model("openai/gpt-x", api_key="sk-one", base_url="http://127.0.0.1:9/v1")
    async with Engine(use_cache=False) as engine:
        b = engine.model(
            "openai/gpt-x",
            api_key="sk-two",
            base_url="http://127.0.0.1:9/v1",
            limits=LimitConfig(max_concurrency=3, rpm=10, tpm=1000),
        )
    assert a.key(BASE) == b.key(BASE)
    assert "sk-" not in repr(a.provider.cache_identity())


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_prompt_keys_are_request_keys(temperature: float) -> None:
    """The fan-out's fast keys hash the same bytes: caches written either way are read."""
    template = replace(BASE, prompt="", temperature=temperature, seed=3)
    keys = PromptKeys(IDENTITY, template, sample=2)
    prompts = ["", "Q: 1+1?\n\nA:", 'quotes " and \\ and \n\t', "é中😀 \x00\x1f", "x" * 10_000]
    for prompt in prompts:
        assert keys.key(prompt) == request_key(IDENTITY, replace(template, prompt=prompt), 2)


async def test_a_models_prompt_keys_follow_its_decoding() -> None:
    async with Engine(use_cache=False) as engine:
        model = engine.model("simulated/x", decoding=Decoding(max_tokens=64, stop=("\n",)))
        assert model.prompt_key("Q: hi") == model.key(model.request("Q: hi"))
        model.decoding = replace(model.decoding, max_tokens=65)
        assert model.prompt_key("Q: hi") == model.key(model.request("Q: hi"))
