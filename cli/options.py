"""The option groups the `opro` commands share, each defined once, and their typed settings.

A command lists the groups it uses (`cli/evaluate.py`, `cli/optimize.py`, `cli/demo.py`);
a group a command uses differently is adapted with `OptionGroup.plus/without/changed`, so
the flag, its type, range, unit and help stay the same everywhere. The dataclasses below are
what commands read after `settings.resolve`: `Settings.pick(LimitSettings)` and so on, by
field name, whichever help group an option is shown in.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    IntRange,
)
from opro.cli.settings import Option, OptionGroup
from opro.engine.limits import DEFAULT_MAX_CONCURRENCY
from opro.engine.prices import price_option
from opro.engine.retry import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_S
from opro.optimize.protocol import PROTOCOLS
from opro.optimize.strategies import POPULATION, STRATEGIES
from opro.tasks.grading import GRADINGS
from opro.tasks.prompts import POSITIONS

DEFAULT_MODEL = "local/smollm2-135m"
APIS = ("chat", "completions")

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
        "an OpenAI-compatible server for the scorer (vLLM, llama.cpp, Ollama)",
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
        "an OpenAI-compatible server for the optimizer",
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
    ),
    exclusive=(("--cache-dir", "--no-cache"),),
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
    base_url: str | None = None
    api: str | None = None
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    price: str | None = None
    priority: int = 1


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
