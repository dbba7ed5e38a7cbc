"""Prices match a model's exact name: a name sharing a prefix with a listed model is another model.

Before, the longest listed prefix won, so `openai/o3-pro` was billed as `o3` and
`openai/gpt-5-pro` as `gpt-5` (about a tenth of their price), and a USD budget on them could
be overrun about tenfold. Now only a documented snapshot-date or `-latest` suffix is dropped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from opro.engine.budget import Budget
from opro.engine.engine import Engine
from opro.engine.prices import known_price, parse_price
from opro.errors import OproError, SettingsError
from opro.providers.errors import ConfigurationError

GPT_4O = (2.50, 10.00)
GPT_4O_MINI = (0.15, 0.60)
O3 = (2.00, 8.00)
GPT_5 = (1.25, 10.00)
CLAUDE_35_HAIKU = (0.80, 4.00)
CLAUDE_35_SONNET = (3.00, 15.00)
CLAUDE_OPUS_4 = (15.00, 75.00)

PRICED = [
    # Listed names, exactly.
    ("openai/gpt-4o", GPT_4O),
    ("openai/gpt-4o-mini", GPT_4O_MINI),
    ("openai/o3", O3),
    ("openai/gpt-5", GPT_5),
    ("anthropic/claude-opus-4", CLAUDE_OPUS_4),
    ("google/gemini-2.0-flash", (0.10, 0.40)),
    ("gemini/gemini-2.0-flash", (0.10, 0.40)),  # the provider alias
    # A documented snapshot date (OpenAI -YYYY-MM-DD, Anthropic -YYYYMMDD) or -latest.
    ("openai/gpt-4o-2024-08-06", GPT_4O),
    ("openai/gpt-4o-2024-11-20", GPT_4O),
    ("openai/gpt-4o-mini-2024-07-18", GPT_4O_MINI),
    ("openai/o3-2025-04-16", O3),
    ("openai/gpt-5-2025-08-07", GPT_5),
    ("anthropic/claude-3-5-haiku-20241022", CLAUDE_35_HAIKU),
    ("anthropic/claude-3-5-haiku-latest", CLAUDE_35_HAIKU),
    ("anthropic/claude-3-5-sonnet-20240620", CLAUDE_35_SONNET),
    ("anthropic/claude-3-5-sonnet-latest", CLAUDE_35_SONNET),
    ("anthropic/claude-opus-4-20250514", CLAUDE_OPUS_4),
    ("anthropic/claude-opus-4-0", CLAUDE_OPUS_4),
    # A snapshot priced differently from its alias is listed under its own name and wins.
    ("openai/gpt-4o-2024-05-13", (5.00, 15.00)),
    # Free providers.
    ("local/smollm2-135m", (0.0, 0.0)),
    ("simulated/anything", (0.0, 0.0)),
]

UNPRICED = [
    # Other models that share a prefix with a listed one.
    "openai/o3-pro",
    "openai/o3-pro-2025-06-10",
    "openai/o3-deep-research",
    "openai/gpt-5-pro",
    "openai/gpt-5-chat-latest",
    "openai/gpt-4o-mini-tts",
    "openai/gpt-4o-mini-transcribe",
    "openai/gpt-4o-mini-search-preview",
    "openai/gpt-4o-audio-preview",
    "openai/gpt-4o-audio-preview-2024-12-17",
    "openai/gpt-4o-realtime-preview",
    "openai/gpt-4.1-mini-fast",
    "openai/gpt-3.5-turbo-16k",
    "openai/gpt-3.5-turbo-0613",  # a four-digit snapshot, priced differently: not a date
    "anthropic/claude-opus-4-1",
    "anthropic/claude-opus-4-5",
    "anthropic/claude-3-haiku-extended",
    "google/gemini-2.5-flash-lite",
    "google/gemini-2.5-pro-preview-tts",
    "google/gemini-2.0-flash-thinking-exp",
    # Not a date, not -latest; no stacking of suffixes; no case folding.
    "openai/gpt-4o-2024-08",
    "openai/gpt-4o-1999-01-01",
    "openai/gpt-4o-2024-08-06-latest",
    "openai/GPT-4O",
    "openai/-latest",
    # Unknown models and providers.
    "openai/some-future-model",
    "openai-compatible/gpt-4o",
]


@pytest.mark.parametrize(("spec", "price"), PRICED)
def test_listed_names_and_their_documented_aliases_are_priced(
    spec: str, price: tuple[float, float]
) -> None:
    found = known_price(spec)
    assert found is not None
    assert (found.input_per_m, found.output_per_m) == price


@pytest.mark.parametrize("spec", UNPRICED)
def test_other_models_have_no_price(spec: str) -> None:
    assert known_price(spec) is None


@pytest.mark.parametrize("spec", ["openai/o3-pro", "openai/gpt-5-pro", "openai/gpt-4o-mini-tts"])
def test_a_usd_budget_on_an_unpriced_model_is_refused(spec: str, tmp_path: Path) -> None:
    engine = Engine(cache_dir=tmp_path, budget=Budget(max_usd=1.0))
    with pytest.raises(ConfigurationError, match=r"no known price .*--price IN,OUT") as info:
        engine.model(spec, base_url="http://127.0.0.1:9/v1", api_key="sk-test")
    assert isinstance(info.value, OproError)
    assert "\n" not in str(info.value)
    # With a price given, the same model is accepted.
    engine.model(
        spec, base_url="http://127.0.0.1:9/v1", api_key="sk-test", price=parse_price("20,80")
    )


@pytest.mark.parametrize(
    "text", ["nan,nan", "inf,1", "1,-inf", "1e400,1", "-1,2", "1,20000", "1", "a,b", "1,2,3", ""]
)
def test_parse_price_refuses_what_is_not_two_finite_prices(text: str) -> None:
    with pytest.raises(SettingsError, match="IN,OUT"):
        parse_price(text)
