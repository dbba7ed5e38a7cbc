"""Checked numbers in the library: NaN, infinity and out-of-range values are refused by name.

NaN fails every comparison, so `x <= 0` alone let `Budget(max_usd=nan)` (an uncapped run) or
`RetryPolicy(timeout=nan)` (every attempt times out at once) through. Each constructor now
raises a `SettingsError`: an `OproError` (one line at the command line) and a `ValueError`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opro.checks import FloatRange, IntRange
from opro.engine.budget import Budget
from opro.engine.engine import Engine
from opro.engine.evaluate import ErrorPolicy
from opro.engine.limits import LimitConfig
from opro.engine.model import Decoding, Price
from opro.engine.retry import RetryPolicy
from opro.errors import OproError, SettingsError
from opro.optimize.loop import OptimizeConfig
from opro.optimize.metaprompt import MetaPromptConfig
from opro.providers.types import Request
from opro.tasks.datasets import Task
from opro.tasks.splits import split
from opro.tasks.types import Example

NAN, INF = math.nan, math.inf
HUGE = 10**400

# (what is built, the bad value, a word the message must contain)
BAD_SETTINGS: list[tuple[Callable[[Any], object], Any, str]] = [
    (lambda v: Budget(max_usd=v), NAN, "USD budget"),
    (lambda v: Budget(max_usd=v), INF, "USD budget"),
    (lambda v: Budget(max_usd=v), 0.0, "USD budget"),
    (lambda v: Budget(max_usd=v), -1.0, "USD budget"),
    (lambda v: Budget(max_usd=v), HUGE, "USD budget"),
    (lambda v: Budget(max_tokens=v), 0, "token budget"),
    (lambda v: Budget(max_tokens=v), HUGE, "token budget"),
    (lambda v: Budget(max_tokens=v), 1.5, "token budget"),
    (lambda v: LimitConfig(rpm=v), INF, "requests/minute"),
    (lambda v: LimitConfig(rpm=v), NAN, "requests/minute"),
    (lambda v: LimitConfig(tpm=v), NAN, "tokens/minute"),
    (lambda v: LimitConfig(tpm=v), -INF, "tokens/minute"),
    (lambda v: LimitConfig(max_concurrency=v), HUGE, "concurrency"),
    (lambda v: LimitConfig(max_concurrency=v), 0, "concurrency"),
    (lambda v: LimitConfig(max_concurrency=v), True, "concurrency"),
    (lambda v: RetryPolicy(timeout=v), NAN, "timeout"),
    (lambda v: RetryPolicy(timeout=v), 0.0, "timeout"),
    (lambda v: RetryPolicy(timeout=v), float("1e400"), "timeout"),
    (lambda v: RetryPolicy(max_attempts=v), 0, "attempts"),
    (lambda v: RetryPolicy(max_attempts=v), HUGE, "attempts"),
    (lambda v: RetryPolicy(base_delay=v), NAN, "retry delay"),
    (lambda v: RetryPolicy(max_delay=v), INF, "retry delay"),
    (lambda v: Price(v, 1.0), NAN, "input tokens"),
    (lambda v: Price(1.0, v), INF, "output tokens"),
    (lambda v: Price(v, 1.0), -0.5, "input tokens"),
    (lambda v: Decoding(temperature=v), NAN, "temperature"),
    (lambda v: Decoding(temperature=v), INF, "temperature"),
    (lambda v: Decoding(temperature=v), -1.0, "temperature"),
    (lambda v: Decoding(temperature=v), 2.5, "temperature"),
    (lambda v: Decoding(max_tokens=v), 10**23, "max tokens"),
    (lambda v: Decoding(max_tokens=v), 0, "max tokens"),
    (lambda v: Decoding(seed=v), -1, "seed"),
    (lambda v: Request(prompt="q", temperature=v), NAN, "temperature"),
    (lambda v: ErrorPolicy(max_error_rate=v), NAN, "error rate"),
    (lambda v: ErrorPolicy(max_error_rate=v), 1.5, "error rate"),
    (lambda v: ErrorPolicy(max_errors=v), -1, "max errors"),
    (lambda v: OptimizeConfig(steps=v), HUGE, "steps"),
    (lambda v: OptimizeConfig(steps=v), -1, "steps"),
    (lambda v: OptimizeConfig(candidates_per_step=v), 0, "candidates"),
    (lambda v: OptimizeConfig(temperature=v), NAN, "temperature"),
    (lambda v: OptimizeConfig(temperature_end=v), INF, "temperature_end"),
    (lambda v: OptimizeConfig(seed=v), HUGE, "seed"),
    (lambda v: OptimizeConfig(eval_every=v), 0, "eval_every"),
    (lambda v: OptimizeConfig(patience=v), 0, "patience"),
    (lambda v: OptimizeConfig(test_top=v), -1, "test_top"),
    (lambda v: MetaPromptConfig(max_shown=v), 0, "max_shown"),
    (lambda v: MetaPromptConfig(score_buckets=v), HUGE, "score_buckets"),
    (lambda v: MetaPromptConfig(min_score=v), NAN, "min_score"),
    (lambda v: MetaPromptConfig(exemplars=v), -1, "exemplars"),
]


@pytest.mark.parametrize(("build", "value", "word"), BAD_SETTINGS)
def test_library_settings_refuse_bad_numbers_by_name(
    build: Callable[[Any], object], value: Any, word: str
) -> None:
    with pytest.raises(SettingsError) as info:
        build(value)
    assert isinstance(info.value, OproError) and isinstance(info.value, ValueError)
    message = str(info.value)
    assert word in message and "\n" not in message
    assert len(message) < 200  # a 400-digit value is shortened, not printed whole


@pytest.mark.parametrize(
    "options",
    [
        lambda: {"decoding": Decoding(temperature=math.nan)},
        lambda: {"decoding": Decoding(max_tokens=10**23)},
        lambda: {"limits": LimitConfig(max_concurrency=10**400)},
        lambda: {"limits": LimitConfig(rpm=math.inf)},
        lambda: {"limits": LimitConfig(tpm=math.nan)},
        lambda: {"price": None, "decoding": Decoding(seed=-5)},
        lambda: {"latency_s": math.inf},
    ],
)
def test_engine_model_refuses_bad_numbers(
    options: Callable[[], dict[str, Any]], tmp_path: Path
) -> None:
    engine = Engine(cache_dir=tmp_path)
    with pytest.raises(SettingsError):
        engine.model("simulated/x", **options())


def test_split_fractions_are_checked() -> None:
    examples = tuple(Example(f"q{i}", "a") for i in range(10))
    task = Task(name="t", examples=examples, answer_type="free", default_train_fraction=0.5)
    for bad in (math.nan, math.inf, -0.1, 1.1):
        with pytest.raises(SettingsError, match="train_fraction"):
            split(task, train_fraction=bad)
        with pytest.raises(SettingsError, match="validation_fraction"):
            split(task, validation_fraction=bad)


def test_ranges_accept_their_bounds_and_nothing_past_them() -> None:
    ints = IntRange(1, 10)
    assert ints.check("n", 1) == 1 and ints.check("n", 10) == 10 and ints("7") == 7
    for bad in (0, 11, True, 2.0, "3", None):
        with pytest.raises(SettingsError, match="n must be an integer from 1 to 10"):
            ints.check("n", bad)
    for text in ("0", "11", "2.0", "nan", "", "1e3", "9" * 5000):
        with pytest.raises(argparse.ArgumentTypeError, match="an integer from 1 to 10"):
            ints(text)

    rate = FloatRange(0.0, 5.0, low_open=True)
    assert rate.check("r", 5) == 5.0 and rate("1e-9") == 1e-9
    for value in (0.0, -1.0, 5.000001, NAN, INF, -INF, 10**400, False):
        with pytest.raises(SettingsError, match="r must be a number > 0 and <= 5"):
            rate.check("r", value)
    for text in ("0", "nan", "NaN", "inf", "-inf", "1e400", "x", "5.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="> 0 and <= 5"):
            rate(text)

    closed = FloatRange(0.0, 2.0)
    assert closed.describe() == "a number from 0 to 2"
    assert closed.check("t", 0) == 0.0 and closed.check("t", 2.0) == 2.0
    anything = FloatRange()
    assert anything.check("s", -1e300) == -1e300
    with pytest.raises(SettingsError, match="s must be a finite number"):
        anything.check("s", NAN)
