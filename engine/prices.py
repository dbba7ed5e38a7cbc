"""Prices of common models, USD per million input / output tokens, to bound a run's cost.

Taken from the vendors' published price lists as of 2026-03 (standard tier, no batch or
cache discounts, short-context rates). Prices change: pass `--price IN,OUT` or `price=` to
override, and treat the table as a default, not a quote. Local and simulated models cost 0.

A name matches only itself: "o3-pro" or "gpt-4o-mini-tts" are other models at other prices,
not variants of "o3" or "gpt-4o-mini", so a prefix match could bill a run at a tenth of its
cost and let a USD budget be overrun. The one rewrite is dropping a suffix the vendors
document as naming the same model: a snapshot date ("gpt-4o-mini-2024-07-18",
"claude-3-5-haiku-20241022") or "-latest". A dated snapshot priced differently from its alias
is listed under its full name, which wins. Anything else has no price: a USD budget on it is
refused until `--price IN,OUT` gives one.
"""

from __future__ import annotations

import argparse
import re

from opro.checks import PRICE_PER_M
from opro.engine.model import Price
from opro.errors import SettingsError

PRICES_AS_OF = "2026-03"

_TABLE: dict[str, tuple[float, float]] = {
    # OpenAI
    "openai/gpt-5": (1.25, 10.00),
    "openai/gpt-5-mini": (0.25, 2.00),
    "openai/gpt-5-nano": (0.05, 0.40),
    "openai/gpt-4.1": (2.00, 8.00),
    "openai/gpt-4.1-mini": (0.40, 1.60),
    "openai/gpt-4.1-nano": (0.10, 0.40),
    "openai/gpt-4o": (2.50, 10.00),
    "openai/gpt-4o-2024-05-13": (5.00, 15.00),  # the first snapshot kept its launch price
    "openai/gpt-4o-mini": (0.15, 0.60),
    "openai/o3": (2.00, 8.00),
    "openai/o3-mini": (1.10, 4.40),
    "openai/o4-mini": (1.10, 4.40),
    "openai/gpt-3.5-turbo": (0.50, 1.50),
    "openai/gpt-3.5-turbo-instruct": (1.50, 2.00),
    # Anthropic
    "anthropic/claude-3-haiku": (0.25, 1.25),
    "anthropic/claude-3-5-haiku": (0.80, 4.00),
    "anthropic/claude-haiku-4-5": (1.00, 5.00),
    "anthropic/claude-3-5-sonnet": (3.00, 15.00),
    "anthropic/claude-3-7-sonnet": (3.00, 15.00),
    "anthropic/claude-sonnet-4": (3.00, 15.00),
    "anthropic/claude-sonnet-4-0": (3.00, 15.00),  # documented alias of claude-sonnet-4
    "anthropic/claude-opus-4": (15.00, 75.00),
    "anthropic/claude-opus-4-0": (15.00, 75.00),  # documented alias of claude-opus-4
    # Google
    "google/gemini-1.5-flash": (0.075, 0.30),
    "google/gemini-1.5-pro": (1.25, 5.00),
    "google/gemini-2.0-flash": (0.10, 0.40),
    "google/gemini-2.0-flash-lite": (0.075, 0.30),
    "google/gemini-2.5-flash": (0.30, 2.50),
    "google/gemini-2.5-pro": (1.25, 10.00),
}

FREE_PROVIDERS = frozenset({"local", "simulated"})

# What the vendors' batch APIs charge, as a fraction of the live price of the same model
# (every model, input and output alike), as of 2026-12: OpenAI's Batch API bills "50% of
# the synchronous API price" (platform.openai.com/docs/guides/batch, openai.com/api/pricing
# "Batch" column); Anthropic's Message Batches bill "all usage at 50% of the standard API
# prices" (docs.claude.com/en/docs/build-with-claude/batch-processing, "Pricing"). An
# openai-compatible server's own batch API gets no discount: its price is what --price says.
BATCH_PRICES_AS_OF = "2026-12"
BATCH_DISCOUNT: dict[str, float] = {"openai": 0.5, "anthropic": 0.5}


def batch_price(spec: str, live: Price | None) -> Price | None:
    """The price of `provider/model` through its vendor's batch API, from its live price
    (the table's or the user's `--price`); None when the live price is unknown."""
    if live is None:
        return None
    factor = BATCH_DISCOUNT.get(spec.split("/", 1)[0], 1.0)
    return Price(live.input_per_m * factor, live.output_per_m * factor)


# A vendor snapshot date at the end of a name: OpenAI's -YYYY-MM-DD, Anthropic's -YYYYMMDD.
_DATED = re.compile(r"^(?P<base>.+)-(?:20\d\d-[01]\d-[0-3]\d|20\d\d[01]\d[0-3]\d)$")
_LATEST = "-latest"


def _same_model_names(spec: str) -> list[str]:
    """`spec`, then the name it aliases when its suffix is a snapshot date or -latest."""
    names = [spec]
    dated = _DATED.match(spec)
    if dated is not None:
        names.append(dated.group("base"))
    elif spec.endswith(_LATEST) and len(spec) > len(_LATEST):
        names.append(spec[: -len(_LATEST)])
    return names


def known_price(spec: str) -> Price | None:
    """The listed price of `provider/model`, or None when it is not in the table."""
    provider = spec.split("/", 1)[0]
    if provider in FREE_PROVIDERS:
        return Price(0.0, 0.0)
    if provider == "gemini":
        spec = "google/" + spec.split("/", 1)[1]
    for name in _same_model_names(spec):
        if name in _TABLE:
            return Price(*_TABLE[name])
    return None


def parse_price(text: str) -> Price:
    """`IN,OUT` in USD per million tokens, e.g. "0.15,0.60"; each finite and in range."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
        if len(values) == 2:
            return Price(values[0], values[1])
    except ValueError:  # not numbers; or NaN, infinite, negative, huge (a SettingsError)
        pass
    raise SettingsError(
        f"price {text!r} is not IN,OUT in USD per million tokens, each "
        f"{PRICE_PER_M.describe()} (e.g. 0.15,0.60)"
    )


def price_option(text: str) -> str:
    """argparse `type=` of `--price`/`--optimizer-price`: refuse a bad price at parse time.

    Returns the text unchanged (the commands parse it with `parse_price` when they build the
    model), so a config file and the flag go through the same check.
    """
    try:
        parse_price(text)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
