"""The option groups the `opro` commands share, each defined once, and their typed settings.

A command lists the groups it uses (`cli/evaluate.py`, `cli/optimize.py`, `cli/demo.py`);
a group a command uses differently is adapted with `OptionGroup.plus/without/changed`, so
the flag, its type, range, unit and help stay the same everywhere. The dataclasses below are
what commands read after `settings.resolve`: `Settings.pick(LimitSettings)` and so on, by
field name, whichever help group an option is shown in.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from opro.caches.disk import CacheError
from opro.caches.open import check_cache_spec
from opro.checks import (
    ATTEMPTS,
    BUDGET_TOKENS,
    BUDGET_USD,
    CONCURRENCY,
    COUNT,
    DELAY_SECONDS,
    FRACTION,
    MAX_TOKENS,
    REQUESTS_PER_MINUTE,
    SECONDS,
    TOKENS_PER_MINUTE,
    IntRange,
)
from opro.cli.settings import Option, OptionGroup
from opro.engine.limits import DEFAULT_MAX_CONCURRENCY
from opro.engine.prices import price_option
from opro.engine.retry import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_S
from opro.optimize.protocol import PROTOCOLS
from opro.optimize.racing import RACING_DELTA
from opro.optimize.strategies import POPULATION, STRATEGIES
from opro.tasks.grading import GRADINGS
from opro.tasks.prompts import POSITIONS

DEFAULT_MODEL = "local/smollm2-135m"
APIS = ("chat", "completions")


def base_urls(value: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    """A (repeatable) base URL option as `Engine.model` takes it: one URL as the string it
    always was (so its cache keys do not change), several as a pool's tuple. A string is
    what a config file or a sweep stored before pools existed."""
    if value is None or isinstance(value, str):
        return value
    urls = tuple(value)
    return urls[0] if len(urls) == 1 else urls


# argparse `type=` callables for options with no named range in `opro.checks`.
positive_int = IntRange(1, 10**9)
non_negative_int = IntRange(0, 10**9)

CONFIG = OptionGroup(
    "settings file",
    (
        Option(
            "--config",
            "a TOML file holding any of this command's options, named like the flags "
            '(steps = 20, scorer = "openai/gpt-4o-mini"); flags given override it',
            metavar="FILE",
            in_file=False,
        ),
    ),
)

TASK = OptionGroup(
    "task",
    (
        Option(
            "--task",
            "a task name (see `opro tasks`) or a .jsonl/.csv file with input and target columns",
            metavar="NAME|FILE",
        ),
        Option(
            "--data-dir",
            "the paper's data release",
            metavar="DIR",
            default_text="$OPRO_DATA_DIR, else ../shared/data",
        ),
    ),
)

SCORER = (
    Option(
        "--scorer",
        "the model that answers the task's questions, as provider/model "
        "(openai/gpt-4o-mini, anthropic/..., google/..., local/<file.gguf>)",
        metavar="PROVIDER/MODEL",
        default_text=f"{DEFAULT_MODEL}, the embedded model",
    ),
    Option(
        "--scorer-base-url",
        "an OpenAI-compatible server for the scorer (vLLM, llama.cpp, Ollama); repeat it "
        "for replicas of one model (a pool): each call goes to the least loaded one, each "
        "replica has its own concurrency window and 429 pauses, while --rpm, --tpm and the "
        "budget apply to the model as a whole",
        kind="append",
        metavar="URL",
        default_text="$OPENAI_BASE_URL, else the vendor's",
    ),
    Option(
        "--scorer-api",
        "API flavour of the scorer",
        choices=APIS,
        default_text="chat; completions for -instruct and legacy OpenAI models",
    ),
    Option(
        "--max-tokens",
        "tokens the scorer may write per answer",
        type=MAX_TOKENS,
        metavar="TOKENS",
        default_text="1024 on the paper's tasks and under --protocol paper, else 256; "
        "8 for the embedded model",
    ),
    Option(
        "--stop",
        "a scorer stop sequence; repeat for more",
        kind="append",
        metavar="TEXT",
        default_text="none; a newline for the embedded model",
    ),
)

OPTIMIZER = (
    Option(
        "--optimizer",
        "the model that proposes new instructions, as provider/model",
        metavar="PROVIDER/MODEL",
        default_text=f"{DEFAULT_MODEL}, the embedded model",
    ),
    Option(
        "--optimizer-base-url",
        "an OpenAI-compatible server for the optimizer; repeat it for a pool of replicas, "
        "as --scorer-base-url",
        kind="append",
        metavar="URL",
        default_text="$OPENAI_BASE_URL, else the vendor's",
    ),
    Option(
        "--optimizer-api",
        "API flavour of the optimizer",
        choices=APIS,
        default_text="chat; completions for -instruct and legacy OpenAI models",
    ),
    Option(
        "--optimizer-max-tokens",
        "tokens the optimizer may write per answer",
        type=MAX_TOKENS,
        metavar="TOKENS",
        default_text="512; 96 for the embedded model, whose longer answers ramble past the "
        "500-character limit",
    ),
)

MODELS_TITLE = "models"
SCORER_MODELS = OptionGroup(MODELS_TITLE, SCORER)
BOTH_MODELS = OptionGroup(MODELS_TITLE, (*SCORER, *OPTIMIZER))
OPTIMIZER_MODELS = OptionGroup(MODELS_TITLE, OPTIMIZER)

LIMITS = OptionGroup(
    "engine limits",
    (
        Option(
            "--max-concurrency",
            "calls in flight per connection (vendor account or server)",
            type=CONCURRENCY,
            default=DEFAULT_MAX_CONCURRENCY,
            metavar="N",
        ),
        Option(
            "--rpm",
            "requests per minute per connection",
            type=REQUESTS_PER_MINUTE,
            metavar="PER_MINUTE",
            default_text="none: adapt to 429s and rate-limit headers",
        ),
        Option(
            "--tpm",
            "tokens per minute per connection",
            type=TOKENS_PER_MINUTE,
            metavar="PER_MINUTE",
            default_text="none",
        ),
        Option(
            "--max-attempts",
            "tries per call, the first included (429s, 5xx and timeouts are retried)",
            type=ATTEMPTS,
            default=DEFAULT_MAX_ATTEMPTS,
            metavar="N",
        ),
        Option(
            "--timeout",
            "seconds one attempt may take",
            type=SECONDS,
            default=DEFAULT_TIMEOUT_S,
            metavar="SECONDS",
        ),
        Option(
            "--max-errors",
            "stop after more failed pairs than this",
            type=COUNT,
            metavar="N",
            default_text="no limit",
        ),
        Option(
            "--max-error-rate",
            "stop when more than this fraction of pairs failed",
            type=FRACTION,
            default=0.2,
            metavar="FRACTION",
        ),
    ),
)
# Commands that never score a task (the math demos) have no pairs to fail.
CALL_LIMITS = LIMITS.without("--max-errors", "--max-error-rate")

COST = OptionGroup(
    "cost",
    (
        Option(
            "--budget-usd",
            "hard cap on the cost in USD; for optimize the run's TOTAL over all sessions "
            "(on --resume, what it spent before counts)",
            type=BUDGET_USD,
            metavar="USD",
            default_text="no cap",
        ),
        Option(
            "--budget-tokens",
            "hard cap on the tokens (input + output); for optimize the run's TOTAL, like "
            "--budget-usd",
            type=BUDGET_TOKENS,
            metavar="TOKENS",
            default_text="no cap",
        ),
        Option(
            "--price",
            "the scorer's price: USD per million input and output tokens, e.g. 0.15,0.60",
            type=price_option,
            metavar="IN,OUT",
            default_text="the table in engine/prices.py",
        ),
        Option(
            "--optimizer-price",
            "the optimizer's price: USD per million input and output tokens",
            type=price_option,
            metavar="IN,OUT",
            default_text="the table in engine/prices.py",
        ),
        Option(
            "--dry-run",
            "print the plan (pairs, calls still to make, tokens, cost) and stop; needs no "
            "key, server or model weights",
            kind="switch",
        ),
    ),
)


def cache_spec(text: str) -> str:
    """The argparse `type=` of `--cache`: the spec if `open_cache` can take it (no
    connection yet), else a one-line error that never shows a password."""
    try:
        return check_cache_spec(text)
    except CacheError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# `--calibrate N` (issue 17): a real run pays for N pairs first, so the plan's expected output
# tokens come from real answers; the commands that plan add it to COST (`PLANNED_COST`).
CALIBRATE = Option(
    "--calibrate",
    "pay for N pairs first (spread over the instructions, seeded) so the plan expects "
    "output lengths from real answers; they are cached and the run reuses them",
    type=non_negative_int,
    default=0,
    metavar="N",
    default_text="0 (off)",
)
PLANNED_COST = COST.plus(CALIBRATE)

CACHE = OptionGroup(
    "cache",
    (
        Option(
            "--cache-dir",
            "where answers are cached; a rerun pays only for what is missing",
            metavar="DIR",
            default_text="$OPRO_CACHE_DIR, else the user cache directory",
        ),
        Option("--no-cache", "neither read nor write the cache", kind="switch"),
        Option(
            "--cache",
            "the cache as one spec: redis://HOST:PORT/DB (rediss://, unix://) for a Redis "
            "server that every process and machine of a sweep shares, or a directory; "
            "needs the redis extra for a URL",
            type=cache_spec,
            metavar="URL|DIR",
            default_text="the --cache-dir directory",
        ),
    ),
    exclusive=(("--cache-dir", "--no-cache", "--cache"),),
)

RUN_DIR = OptionGroup(
    "run directory",
    (
        Option(
            "--run-dir",
            "where the run is logged (config.json, steps.jsonl, results.json, summary.txt)",
            metavar="DIR",
            default_text="opro-runs/<task>-<time>",
        ),
        Option("--resume", "continue the run in --run-dir", kind="switch"),
    ),
)

# Racing (`optimize/racing.py`): its own group, so `opro optimize` and `opro sweep` share it.
RACING = OptionGroup(
    "racing",
    (
        Option(
            "--racing",
            "score each step's candidates in rounds and stop those that, with high "
            "confidence, can enter neither the meta-prompt nor the final table",
            kind="switch",
        ),
        Option(
            "--racing-delta",
            "racing's error rate: per step, the chance that a candidate that could matter "
            "is stopped (Bonferroni over the candidates and the looks)",
            type=RACING_DELTA,
            default=0.05,
            metavar="P",
        ),
    ),
)

PROMPT = OptionGroup(
    "prompt and grading",
    (
        Option(
            "--protocol",
            "ours, or paper: the reference code's settings for every option not given "
            "(grading, 1024 scorer tokens, no Q:/A: framing, meta-prompt rules, extraction)",
            choices=PROTOCOLS,
            default_text="ours",
        ),
        Option(
            "--position",
            "where the instruction goes in the prompt",
            choices=POSITIONS,
            default_text="A_begin for the embedded scorer, else Q_begin",
        ),
        Option(
            "--qa",
            "Q:/A: framing around the prompt (default: off, as in the paper's code; on for "
            "A_begin/before_Q, which need it, and for the embedded scorer)",
            kind="switch",
        ),
        Option("--no-qa", "no Q:/A: framing around the prompt", kind="switch"),
        Option(
            "--grading",
            "the accuracy that is optimized and picks the best: strict (ours) or reference "
            "(the paper's code's rules, comparable with its numbers); reports show both",
            choices=GRADINGS,
            default_text="strict; reference under --protocol paper",
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class TaskSettings:
    task: str | None = None
    data_dir: str | None = None


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    rpm: float | None = None
    tpm: float | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: float = DEFAULT_TIMEOUT_S
    max_errors: int | None = None
    max_error_rate: float | None = None


@dataclass(frozen=True, slots=True)
class CostSettings:
    budget_usd: float | None = None
    budget_tokens: int | None = None
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class CacheSettings:
    cache_dir: str | None = None
    no_cache: bool = False
    cache: str | None = None  # a Redis URL or a directory (`caches.open.open_cache`)


@dataclass(frozen=True, slots=True)
class RunDirSettings:
    run_dir: str | None = None
    resume: bool = False


@dataclass(frozen=True, slots=True)
class ModelRole:
    """One model a command builds: the scorer or the optimizer, with its resolved defaults.

    `priority` orders waiting calls on a shared connection (the optimizer's 0 never queues
    behind a scorer backlog).
    """

    spec: str
    base_url: str | tuple[str, ...] | None = None  # several: a pool (see `base_urls`)
    api: str | None = None
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    price: str | None = None
    priority: int = 1


BATCH = OptionGroup(
    "batch",
    (
        Option(
            "--batch",
            "send the scorer's uncached pairs through the vendor's batch API (openai/, "
            "anthropic/): about half the price, answered within up to 24 hours; the batch "
            "state is kept in --run-dir, so --resume picks a pending batch up",
            kind="switch",
        ),
        Option(
            "--batch-retry",
            "where requests a batch did not answer (expired, cancelled, 429/5xx) go: a "
            "follow-up batch, or the live API at the live price",
            choices=("batch", "live"),
            default="batch",
        ),
        Option(
            "--batch-poll-max",
            "longest wait between polls of a pending batch, in seconds (polls start 5 s "
            "apart and double)",
            type=DELAY_SECONDS,
            metavar="SECONDS",
            default=300.0,
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class BatchOptionSettings:
    batch: bool = False
    batch_retry: str = "batch"
    batch_poll_max: float = 300.0


STRATEGY = OptionGroup(
    "search strategy",
    (
        Option(
            "--strategy",
            "opro: the meta-prompt loop; evoprompt-ga / evoprompt-de: EvoPrompt's genetic "
            "algorithm / differential evolution on a population of prompts",
            choices=STRATEGIES,
            default="opro",
        ),
        Option(
            "--population",
            "EvoPrompt population size N: each step makes N children; the --start "
            "instructions are members and the optimizer writes the rest from training examples",
            type=POPULATION,
            metavar="N",
            default_text="--candidates-per-step, so a step scores as many prompts as OPRO's",
        ),
    ),
)
