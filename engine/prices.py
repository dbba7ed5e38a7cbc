"""Prices of common models, USD per million input / output tokens, to bound a run's cost.

Taken from the vendors' published price lists as of 2026-03 (standard tier, no batch or
cache discounts, short-context rates). Prices change: pass `--price IN,OUT` or `price=` to
override, and treat the table as a default, not a quote. Local and simulated models cost 0.
A model matches the longest listed prefix, so dated snapshots ("gpt-4o-mini-2024-07-18")
find their family.
"""

from __future__ import annotations

from .model import Price

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
    "anthropic/claude-opus-4": (15.00, 75.00),
    # Google
    "google/gemini-1.5-flash": (0.075, 0.30),
    "google/gemini-1.5-pro": (1.25, 5.00),
    "google/gemini-2.0-flash": (0.10, 0.40),
    "google/gemini-2.0-flash-lite": (0.075, 0.30),
    "google/gemini-2.5-flash": (0.30, 2.50),
    "google/gemini-2.5-pro": (1.25, 10.00),
}

FREE_PROVIDERS = frozenset({"local", "simulated"})


def known_price(spec: str) -> Price | None:
    """The listed price of `provider/model`, or None when it is not in the table."""
    provider = spec.split("/", 1)[0]
    if provider in FREE_PROVIDERS:
        return Price(0.0, 0.0)
    if provider == "gemini":
        spec = "google/" + spec.split("/", 1)[1]
    best = ""
    for prefix in _TABLE:
        if spec.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return Price(*_TABLE[best]) if best else None


def parse_price(text: str) -> Price:
    """`IN,OUT` in USD per million tokens, e.g. "0.15,0.60"."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 2 or any(v < 0 for v in values):
        raise ValueError(f"price {text!r} is not IN,OUT in USD per million tokens (e.g. 0.15,0.60)")
    return Price(values[0], values[1])
