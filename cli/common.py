"""What the `opro` commands share: how resolved settings become an engine and its models.

`cli/evaluate.py`, `cli/optimize.py` and `cli/demo.py` build their engine, scorer and error
policy here, so one option means the same thing in every command. Without `--scorer` (and,
for optimize, `--optimizer`) the embedded SmolLM2-135M is used, with the settings measured
in `benchmarks/embedded_model.py` to give an optimizer real signal: chat mode, answers of
at most 8 tokens cut at the first newline, instruction at the start of the answer.
`build_model` is the one place a command turns a `ModelRole` into a `Model`: a live one
from `Engine.model`, or for a plan (`--dry-run`) one that needs no key, server or weights.
"""

from __future__ import annotations

from opro.cli.options import (
    DEFAULT_MODEL,
    CacheSettings,
    CostSettings,
    LimitSettings,
    ModelRole,
    base_urls,
    non_negative_int,
    positive_int,
)
from opro.cli.settings import Settings, UsageError
from opro.engine.budget import Budget
from opro.engine.engine import Engine
from opro.engine.evaluate import ErrorPolicy
from opro.engine.limits import LimitConfig
from opro.engine.model import Decoding, Model
from opro.engine.plan import plan_model
from opro.engine.prices import parse_price
from opro.engine.retry import RetryPolicy
from opro.optimize.protocol import OTHER_TASK_SCORER_MAX_TOKENS, default_scorer_max_tokens
from opro.tasks.prompts import Position

__all__ = [
    "DEFAULT_MODEL",
    "UsageError",
    "build_model",
    "engine_from_settings",
    "non_negative_int",
    "positive_int",
]

# The embedded scorer's defaults (see the module docstring); flags override each one.
EMBEDDED_SCORER_API = "chat"
EMBEDDED_SCORER_MAX_TOKENS = 8
EMBEDDED_SCORER_STOP = ("\n",)
EMBEDDED_POSITION: Position = "A_begin"
DEFAULT_MAX_TOKENS = OTHER_TASK_SCORER_MAX_TOKENS  # 1024 on the paper's tasks (protocol.py)
DEFAULT_POSITION: Position = "Q_begin"
OPTIMIZER_MAX_TOKENS = 512
EMBEDDED_OPTIMIZER_MAX_TOKENS = 96


def engine_from_settings(s: Settings) -> Engine:
    """The engine the shared options describe (retries, cache, budget)."""
    limits = s.pick(LimitSettings)
    cost = s.pick(CostSettings)
    cache = s.pick(CacheSettings)
    retry = RetryPolicy(max_attempts=limits.max_attempts, timeout=limits.timeout)
    budget = Budget(max_usd=cost.budget_usd, max_tokens=cost.budget_tokens)
    if cache.cache is not None:
        for other in ("cache_dir", "no_cache"):  # argparse stops two flags; a resume's
            if s[other]:  # stored options can still meet a flag given now
                raise UsageError(
                    f"{s.where('cache')} and {s.where(other)} exclude each other: give one"
                )
        return Engine(cache=cache.cache, retry=retry, budget=budget)
    return Engine(
        cache_dir=cache.cache_dir, use_cache=not cache.no_cache, retry=retry, budget=budget
    )


def error_policy(s: Settings) -> ErrorPolicy:
    limits = s.pick(LimitSettings)
    return ErrorPolicy(max_errors=limits.max_errors, max_error_rate=limits.max_error_rate)


def uses_embedded_scorer(s: Settings) -> bool:
    return s.get("scorer") is None


def default_position(s: Settings) -> Position:
    """The instruction position when none was given: it depends on the scorer."""
    return EMBEDDED_POSITION if uses_embedded_scorer(s) else DEFAULT_POSITION


def scorer_role(s: Settings) -> ModelRole:
    """The scorer the settings describe, with the embedded model's own defaults."""
    embedded = uses_embedded_scorer(s)
    stop = s["stop"] if s["stop"] is not None else (EMBEDDED_SCORER_STOP if embedded else ())
    max_tokens = s["max_tokens"] or (
        EMBEDDED_SCORER_MAX_TOKENS if embedded else default_scorer_max_tokens(s.get("task"))
    )
    return ModelRole(
        spec=s["scorer"] or DEFAULT_MODEL,
        base_url=base_urls(s["scorer_base_url"]),
        api=s["scorer_api"] or (EMBEDDED_SCORER_API if embedded else None),
        max_tokens=max_tokens,
        stop=tuple(stop),
        price=s.get("price"),
    )


def optimizer_role(s: Settings) -> ModelRole:
    """The optimizer the settings describe; it never queues behind scorer calls."""
    spec = s["optimizer"] or DEFAULT_MODEL
    max_tokens = s["optimizer_max_tokens"] or (
        EMBEDDED_OPTIMIZER_MAX_TOKENS if s["optimizer"] is None else OPTIMIZER_MAX_TOKENS
    )
    return ModelRole(
        spec=spec,
        base_url=base_urls(s["optimizer_base_url"]),
        api=s["optimizer_api"],
        max_tokens=max_tokens,
        price=s.get("optimizer_price"),
        priority=0,
    )


def build_model(
    engine: Engine, role: ModelRole, limits: LimitSettings, *, plan_only: bool = False
) -> Model:
    """The scorer or optimizer `role` describes, on `engine` (its cache, budget, limits).

    `plan_only`: a model for `--dry-run`, which renders, keys and looks up requests exactly
    as the live one would but needs no key, server or weights, and can never call.
    """
    price = parse_price(role.price) if role.price else None
    if plan_only:
        return plan_model(
            role.spec,
            cache=engine.cache,
            decoding=Decoding(0.0, role.max_tokens, role.stop),
            base_url=role.base_url,
            api=role.api,
            price=price,
            budget=engine.budget,
        )
    return engine.model(
        role.spec,
        limits=LimitConfig(max_concurrency=limits.max_concurrency, rpm=limits.rpm, tpm=limits.tpm),
        decoding=Decoding(max_tokens=role.max_tokens, stop=role.stop),
        base_url=role.base_url,
        price=price,
        priority=role.priority,
        api=role.api,
    )
