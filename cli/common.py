"""What the `opro` subcommands share: the engine options and how they become objects.

`cli.py`, `cli_optimize.py` and `cli_demo.py` all build their engine, scorer and error
policy here, so one flag means the same thing in every command. Without `--scorer` (and,
for optimize, `--optimizer`) the embedded SmolLM2-135M is used, with the settings measured
in `benchmarks/embedded_model.py` to give an optimizer real signal: chat mode, answers of
at most 8 tokens cut at the first newline, instruction at the start of the answer.
"""

from __future__ import annotations

import argparse

from opro.checks import (
    ATTEMPTS,
    BUDGET_TOKENS,
    BUDGET_USD,
    CONCURRENCY,
    COUNT,
    FRACTION,
    MAX_TOKENS,
    REQUESTS_PER_MINUTE,
    SECONDS,
    TOKENS_PER_MINUTE,
    FloatRange,
    IntRange,
)
from opro.engine.budget import Budget
from opro.engine.engine import Engine
from opro.engine.evaluate import ErrorPolicy
from opro.engine.limits import DEFAULT_MAX_CONCURRENCY, LimitConfig
from opro.engine.model import Decoding, Model
from opro.engine.prices import parse_price, price_option
from opro.engine.retry import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_S, RetryPolicy
from opro.errors import OproError
from opro.optimize.protocol import OTHER_TASK_SCORER_MAX_TOKENS, default_scorer_max_tokens
from opro.tasks.grading import GRADINGS
from opro.tasks.prompts import Position

DEFAULT_MODEL = "local/smollm2-135m"
# The embedded scorer's defaults (see the module docstring); flags override each one.
EMBEDDED_SCORER_API = "chat"
EMBEDDED_SCORER_MAX_TOKENS = 8
EMBEDDED_SCORER_STOP = ("\n",)
EMBEDDED_POSITION: Position = "A_begin"
DEFAULT_MAX_TOKENS = OTHER_TASK_SCORER_MAX_TOKENS  # 1024 on the paper's tasks (protocol.py)
DEFAULT_POSITION: Position = "Q_begin"


class UsageError(OproError):
    """Bad input on the command line; the message says what to change."""


# argparse `type=` callables for options with no named range in `opro.checks`: each checks
# the type, finiteness and a range and names the option in a one-line error. Prefer a named
# range (`checks.MAX_TOKENS`, `checks.FRACTION`, ...) or an `IntRange`/`FloatRange` of your own.
positive_int = IntRange(1, 10**9)
non_negative_int = IntRange(0, 10**9)
positive_float = FloatRange(0.0, 1e12, low_open=True)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """Options every command that calls a scorer shares."""
    g = p.add_argument_group("engine")
    g.add_argument("--data-dir", help="the paper's data release (default: $OPRO_DATA_DIR)")
    g.add_argument(
        "--scorer", help=f"provider/model, e.g. openai/gpt-4o-mini (default: {DEFAULT_MODEL})"
    )
    g.add_argument("--scorer-base-url", help="OpenAI-compatible server (default: $OPENAI_BASE_URL)")
    g.add_argument("--scorer-api", choices=["chat", "completions"], help="API flavour")
    g.add_argument(
        "--max-tokens",
        type=MAX_TOKENS,
        help="scorer max tokens (default: 1024, the paper's, on the paper's tasks and under "
        f"--protocol paper, else {DEFAULT_MAX_TOKENS}; {EMBEDDED_SCORER_MAX_TOKENS} for the "
        "embedded model)",
    )
    g.add_argument(
        "--stop",
        action="append",
        help="scorer stop sequence, repeatable (default: none; a newline for the embedded model)",
    )
    g.add_argument("--max-concurrency", type=CONCURRENCY, default=DEFAULT_MAX_CONCURRENCY)
    g.add_argument(
        "--rpm", type=REQUESTS_PER_MINUTE, help="requests/minute (default: adapt to 429s)"
    )
    g.add_argument("--tpm", type=TOKENS_PER_MINUTE, help="tokens/minute")
    g.add_argument("--max-attempts", type=ATTEMPTS, default=DEFAULT_MAX_ATTEMPTS)
    g.add_argument("--timeout", type=SECONDS, default=DEFAULT_TIMEOUT_S, help="seconds per attempt")
    g.add_argument("--max-errors", type=COUNT, help="abort after more failed pairs than this")
    g.add_argument(
        "--max-error-rate",
        type=FRACTION,
        default=0.2,
        help="abort when more than this fraction of pairs fail (default 0.2)",
    )
    g.add_argument(
        "--budget-usd",
        type=BUDGET_USD,
        help="hard cap on the cost in USD; for optimize the run's TOTAL over all sessions "
        "(on --resume, what it spent before counts)",
    )
    g.add_argument(
        "--budget-tokens",
        type=BUDGET_TOKENS,
        help="hard cap on the tokens; for optimize the run's TOTAL, like --budget-usd",
    )
    g.add_argument(
        "--price", type=price_option, help="scorer price IN,OUT in USD per million tokens"
    )
    g.add_argument("--dry-run", action="store_true", help="print calls, tokens and cost; stop")
    cache = g.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", help="result cache (default: $OPRO_CACHE_DIR or user cache)")
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")


def engine_from_args(args: argparse.Namespace) -> Engine:
    """The engine the shared options describe (retries, cache, budget)."""
    retry = RetryPolicy(max_attempts=args.max_attempts, timeout=args.timeout)
    budget = Budget(max_usd=args.budget_usd, max_tokens=args.budget_tokens)
    return Engine(cache_dir=args.cache_dir, use_cache=not args.no_cache, retry=retry, budget=budget)


def error_policy_from_args(args: argparse.Namespace) -> ErrorPolicy:
    return ErrorPolicy(max_errors=args.max_errors, max_error_rate=args.max_error_rate)


def uses_embedded_scorer(args: argparse.Namespace) -> bool:
    return getattr(args, "scorer", None) is None


def default_position(args: argparse.Namespace) -> Position:
    """The instruction position when none was given: it depends on the scorer."""
    return EMBEDDED_POSITION if uses_embedded_scorer(args) else DEFAULT_POSITION


def scorer_from_args(engine: Engine, args: argparse.Namespace) -> Model:
    embedded = uses_embedded_scorer(args)
    stop = args.stop if args.stop is not None else (EMBEDDED_SCORER_STOP if embedded else ())
    max_tokens = args.max_tokens or (
        EMBEDDED_SCORER_MAX_TOKENS
        if embedded
        else default_scorer_max_tokens(getattr(args, "task", None))
    )
    return engine.model(
        args.scorer or DEFAULT_MODEL,
        limits=LimitConfig(max_concurrency=args.max_concurrency, rpm=args.rpm, tpm=args.tpm),
        decoding=Decoding(max_tokens=max_tokens, stop=tuple(stop)),
        base_url=args.scorer_base_url,
        price=parse_price(args.price) if args.price else None,
        api=args.scorer_api or (EMBEDDED_SCORER_API if embedded else None),
    )


def add_grading_option(p: argparse.ArgumentParser) -> None:
    """`--grading`: which accuracy ranks instructions; both are always reported."""
    p.add_argument(
        "--grading",
        choices=GRADINGS,
        default=None,
        help="the accuracy that is optimized and picks the best: strict (ours; the default) or "
        "reference (the paper's code's rules, comparable with its numbers; the default under "
        "--protocol paper); reports show both",
    )
