"""Checked numbers: the one place that says which counts, rates, prices and fractions are valid.

NaN fails every comparison, so `x <= 0` alone lets it through, and infinity or a 400-digit
integer passes a lower bound and then switches a safeguard off (an uncapped budget, a timeout
that never fires) or ends in a traceback far from the flag that caused it. So every number a
user, a config file or a library caller gives goes through an `IntRange` or a `FloatRange`,
which checks the type, finiteness and a stated range, and names the setting in a one-line error.

One object serves every entry point:

- as an argparse `type=` it turns the option's text into a number, or raises
  `argparse.ArgumentTypeError`, which the parser prints as one line naming the option
  (`opro optimize --config` runs TOML values through the same `type`);
- `.check(name, value)` validates a library argument (a dataclass field, a constructor
  argument) and raises `SettingsError` (an `OproError` and a `ValueError`).

The named ranges below are shared by the command line and the library, so both refuse the
same values. New options should reuse them, or build their own `IntRange`/`FloatRange`.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from opro.errors import SettingsError


def _fmt(x: float) -> str:
    return f"{x:.15g}"


@dataclass(frozen=True, slots=True)
class IntRange:
    """Integers from `low` to `high`, both included."""

    low: int
    high: int

    def describe(self) -> str:
        return f"an integer from {self.low} to {self.high}"

    def check(self, name: str, value: object) -> int:
        """`value` if it is an int in range, else `SettingsError` naming `name`."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{name} must be {self.describe()}, got {value!r}")
        if not self.low <= value <= self.high:
            raise SettingsError(f"{name} must be {self.describe()}, got {_short(value)}")
        return value

    def __call__(self, text: str) -> int:
        """The argparse `type=` form: text in, int out, one-line error otherwise."""
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be {self.describe()}, got {_short(text)!r}"
            ) from None
        if not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {_short(value)}")
        return value


@dataclass(frozen=True, slots=True)
class FloatRange:
    """Finite numbers between `low` and `high` (None: unbounded on that side, still finite).

    `low_open` excludes `low` itself (for rates, timeouts and budgets, where 0 means nothing
    could ever happen).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def describe(self) -> str:
        low, high = self.low, self.high
        if low is not None and high is not None and not self.low_open:
            return f"a number from {_fmt(low)} to {_fmt(high)}"
        parts = []
        if low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_fmt(low)}")
        if high is not None:
            parts.append(f"<= {_fmt(high)}")
        return "a number " + " and ".join(parts) if parts else "a finite number"

    def _ok(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def check(self, name: str, value: object) -> float:
        """`value` as a float if it is a finite number in range, else `SettingsError`."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{name} must be {self.describe()}, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            number = math.inf
        if not self._ok(number):
            raise SettingsError(f"{name} must be {self.describe()}, got {_short(value)}")
        return number

    def __call__(self, text: str) -> float:
        """The argparse `type=` form: text in, float out, one-line error otherwise."""
        try:
            value = float(text.strip())
        except ValueError:
            value = math.nan
        if not self._ok(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {_short(text)!r}")
        return value


def _short(value: object) -> str:
    """A value for an error message: a 400-digit number must not fill the terminal."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


# Shared by the command line and the library constructors (Budget, LimitConfig, RetryPolicy,
# Price, Decoding, ErrorPolicy, OptimizeConfig, MetaPromptConfig). The upper bounds are far
# above any real use and only stop values that are typos or overflow something downstream.
MAX_TOKENS = IntRange(1, 1_000_000)  # tokens one call may generate
CONCURRENCY = IntRange(1, 10_000)  # calls in flight per connection
REQUESTS_PER_MINUTE = FloatRange(0.0, 1e8, low_open=True)
TOKENS_PER_MINUTE = FloatRange(0.0, 1e11, low_open=True)
ATTEMPTS = IntRange(1, 100)  # tries per call, the first included
SECONDS = FloatRange(0.0, 86_400.0, low_open=True)  # a timeout or a time limit: at most a day
DELAY_SECONDS = FloatRange(0.0, 86_400.0)  # a wait, which may be zero
BUDGET_USD = FloatRange(0.0, 1e6, low_open=True)
BUDGET_TOKENS = IntRange(1, 10**15)
PRICE_PER_M = FloatRange(0.0, 10_000.0)  # USD per million tokens
TEMPERATURE = FloatRange(0.0, 2.0)  # the widest range vendors accept (OpenAI, Gemini)
FRACTION = FloatRange(0.0, 1.0)
SEED = IntRange(0, 2**63 - 1)  # fits JSON readers' 64-bit integers (config.json)
STEPS = IntRange(0, 1_000_000)
CANDIDATES = IntRange(1, 1_000)  # answers asked of the optimizer per step
COUNT = IntRange(0, 10**12)  # a tally such as a number of allowed errors
POSITIVE_COUNT = IntRange(1, 10**12)
SCORE = FloatRange()  # any finite score
