"""`opro optimize`: run OPRO on a task from the command line or a TOML file.

Settings come from `cli/settings.py`: each option's default, then `--config run.toml`, then
the flags given; then the protocol's and the models' own defaults (`settings_from_args`).
The command builds an `Engine`, the scorer and optimizer `Model`s and a `PromptProblem`, and
calls `optimize` once under `asyncio.run`, with a progress display fed by the loop's
callbacks (`cli/progress.py`). Every user error ends as one `opro: error: ...` line; a
budget stop says how to continue.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opro.caches.open import cache_label
from opro.checks import (
    CANDIDATES,
    COUNT,
    FRACTION,
    POSITIVE_COUNT,
    SEED,
    STEPS,
    TEMPERATURE,
)
from opro.cli.batch import batch_settings, check_batch_scorer
from opro.cli.common import (
    build_model,
    default_position,
    engine_from_settings,
    error_policy,
    optimizer_role,
    positive_int,
    scorer_role,
)
from opro.cli.help import add_command
from opro.cli.options import (
    BATCH,
    BOTH_MODELS,
    CACHE,
    CONFIG,
    LIMITS,
    PLANNED_COST,
    PROMPT,
    RACING,
    RUN_DIR,
    STRATEGY,
    TASK,
    LimitSettings,
)
from opro.cli.progress import Board, renderer_for
from opro.cli.protocol import apply_protocol, max_shown_setting, min_score_setting, qa_framing
from opro.cli.report import write_run_report
from opro.cli.runplan import (
    RunPlan,
    dry_run_time,
    per_call_spend,
    plan_vs_bill,
    speed_from_limits,
)
from opro.cli.settings import Option, OptionGroup, Settings, UsageError, add_groups, resolve
from opro.engine.budget import BudgetExceeded
from opro.engine.calibrate import calibrate
from opro.engine.ledger import LedgerError, recording, stop_message
from opro.engine.model import ModelCallError
from opro.optimize.evoplan import plan_evolution
from opro.optimize.loop import OptimizationResult, OptimizeConfig, optimize
from opro.optimize.metaprompt import (
    BUCKETS,
    EXEMPLAR_RULES,
    EXEMPLARS,
    EXTRACTIONS,
    ORDERS,
    STYLES,
    MetaPromptConfig,
)
from opro.optimize.plan import plan_optimization
from opro.optimize.problem import PromptProblem
from opro.optimize.racing import racing_plan_line
from opro.optimize.runlog import RunDirError, logged_spend, render_summary
from opro.optimize.strategies import is_evolutionary
from opro.tasks import load_task


def _buckets(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        return BUCKETS(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be none or {BUCKETS.describe()}, got {text[:40]!r}"
        ) from None


SPLITS = (
    Option(
        "--train-fraction",
        "fraction of the examples the instructions are optimized on",
        type=FRACTION,
        metavar="FRACTION",
        default_text="the task's own: 3.5% for GSM8K, 20% for BBH",
    ),
    Option(
        "--validation-fraction",
        "fraction held out to check the best instruction every --eval-every steps",
        type=FRACTION,
        default=0.0,
        metavar="FRACTION",
    ),
    Option(
        "--split-seed",
        "seed of the train/validation/test split",
        type=SEED,
        default=0,
        metavar="N",
    ),
    Option(
        "--test-limit",
        "use only the first N test examples in the final table",
        type=positive_int,
        metavar="N",
        default_text="all",
    ),
)
LOOP = OptionGroup(
    "optimizer loop",
    (
        Option("--steps", "optimization steps after step 0", type=STEPS, default=200, metavar="N"),
        Option(
            "--candidates-per-step",
            "instructions the optimizer proposes per step",
            type=CANDIDATES,
            default=8,
            metavar="N",
        ),
        Option(
            "--temperature",
            "optimizer temperature, 0 to 2",
            type=TEMPERATURE,
            default=1.0,
            metavar="T",
        ),
        Option(
            "--temperature-end",
            "rise linearly to this temperature by the last step",
            type=TEMPERATURE,
            metavar="T",
            default_text="no schedule",
        ),
        Option("--seed", "seed of the exemplar draws", type=SEED, default=0, metavar="N"),
        Option(
            "--start",
            "a starting instruction; repeat for more",
            kind="append",
            metavar="TEXT",
            default_text='"Let\'s solve the problem." for GSM8K, else the empty one',
        ),
        Option(
            "--eval-every",
            "validation interval in steps",
            type=POSITIVE_COUNT,
            default=3,
            metavar="N",
        ),
        Option(
            "--patience",
            "stop after N validations without a gain",
            type=POSITIVE_COUNT,
            metavar="N",
            default_text="never stop early",
        ),
        Option(
            "--test-top",
            "instructions scored on every split at the end (0: no final table)",
            type=COUNT,
            default=3,
            metavar="N",
        ),
        Option(
            "--select-by",
            "the score that ranks the final table",
            choices=("train", "validation"),
            default="train",
        ),
    ),
)
META = OptionGroup(
    "meta-prompt",
    (
        Option(
            "--meta-prompt",
            "meta-prompt style; auto: gpt for GPT optimizers, else instruction-tuned (as the "
            "paper)",
            choices=("auto", *STYLES),
            default="auto",
        ),
        Option(
            "--max-shown",
            "earlier instructions shown: N, all, or auto (20; all in the pretrained style)",
            type=max_shown_setting,
            metavar="N|all|auto",
            default_text="20; auto under --protocol paper",
        ),
        Option("--order", "order of the instructions shown", choices=ORDERS, default="ascending"),
        Option(
            "--score-buckets",
            "score granularity shown: 100 (percent), 20, or none (raw)",
            type=_buckets,
            default=100,
            metavar="N|none",
        ),
        Option(
            "--min-score",
            "hide earlier instructions scoring below this: a number, none, or auto (0.3 for a "
            "GPT scorer, else 0; none in the pretrained style)",
            type=min_score_setting,
            metavar="SCORE|none|auto",
            default_text="none; auto under --protocol paper",
        ),
        Option(
            "--exemplars", "task examples shown per step", type=EXEMPLARS, default=3, metavar="N"
        ),
        Option("--exemplars-first", "examples before the instructions", kind="switch"),
        Option(
            "--exemplar-selection",
            "which training examples the meta-prompt shows",
            choices=EXEMPLAR_RULES,
            default="random",
        ),
        Option(
            "--extraction",
            "how candidates are read from the optimizer's answers: lenient (ours) or "
            "reference (only what the paper's code takes; a miss is counted, never scored)",
            choices=EXTRACTIONS,
            default_text="lenient; reference under --protocol paper",
        ),
    ),
)
GROUPS = (
    CONFIG,
    TASK.plus(*SPLITS),
    BOTH_MODELS,
    LOOP,
    STRATEGY,
    META,
    RACING,
    PROMPT,
    LIMITS,
    PLANNED_COST,
    CACHE,
    RUN_DIR,
    BATCH,
)
EXAMPLES = (
    "opro optimize --task synthetic/boolean_expressions --steps 3 --train-fraction 0.15",
    "opro optimize --task bbh/navigate --scorer openai/gpt-4o-mini --optimizer openai/gpt-4o \\\n"
    "    --budget-usd 20 --run-dir runs/navigate",
    "opro optimize --task bbh/navigate --scorer openai/gpt-4o-mini --dry-run   # the plan only",
    "opro optimize --config run.toml --steps 50     # flags override the file",
    "opro optimize --resume --run-dir runs/navigate --budget-usd 40",
)


def register(subparsers: Any) -> None:
    """Add the `optimize` command to the `opro` parser's subcommands."""
    p = add_command(
        subparsers,
        "optimize",
        "Search for a better instruction for a task with OPRO: an optimizer model proposes "
        "instructions, a scorer model's accuracy with each one ranks them.",
        EXAMPLES,
        "The run is logged in --run-dir and can be resumed; --dry-run prints the plan "
        "(calls, tokens, cost) without a key, a server or model weights.",
        short="search for a better instruction (OPRO)",
        usage="opro optimize --task NAME|FILE [options]",
    )
    add_groups(p, GROUPS)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Defaults, the TOML file, the flags given; then the protocol's and the models' defaults."""
    s = resolve(GROUPS, args, command="optimize")
    apply_protocol(s)
    if s["position"] is None:
        s.derive("position", default_position(s), "the scorer")
    return s


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(text).stem if "." in text else text).strip("-")


def _safe_urls(value: str | list[str] | None) -> str | list[str] | None:
    """`_safe_url` of a base URL option, one URL or a pool's list of them."""
    if isinstance(value, list):
        safe = [_safe_url(url) or "" for url in value]
        return safe[0] if len(safe) == 1 else safe
    return _safe_url(value)


def _safe_url(url: str | None) -> str | None:
    """A base URL fit for config.json: no user, password, query or fragment."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def configs(s: Settings) -> tuple[OptimizeConfig, MetaPromptConfig]:
    """The loop's and the meta-prompt's settings; a bad combination fails here."""
    if s["population"] is not None and not is_evolutionary(s["strategy"]):
        raise UsageError(
            f"{s.where('population')} sizes an EvoPrompt population: add --strategy "
            "evoprompt-ga or --strategy evoprompt-de"
        )
    meta = MetaPromptConfig(
        style=s["meta_prompt"],
        max_shown=s["max_shown"],
        order=s["order"],
        score_buckets=s["score_buckets"],
        min_score=s["min_score"],
        exemplars=s["exemplars"],
        exemplars_first=bool(s["exemplars_first"]),
        exemplar_selection=s["exemplar_selection"],
        extraction=s["extraction"],
    )
    cfg = OptimizeConfig(
        steps=s["steps"],
        candidates_per_step=s["candidates_per_step"],
        temperature=s["temperature"],
        temperature_end=s["temperature_end"],
        seed=s["seed"],
        meta=meta,
        eval_every=s["eval_every"],
        patience=s["patience"],
        test_top=s["test_top"],
        select_by=s["select_by"],
        grading=s["grading"],
        protocol=s["protocol"],
        racing=bool(s["racing"]),
        racing_delta=s["racing_delta"],
        strategy=s["strategy"],
        population=s["population"],
    )
    return cfg, meta


def _check_combinations(s: Settings) -> None:
    """Settings that only fail together, named by where each came from."""
    if s["validation_fraction"] == 0:
        if s["patience"] is not None:
            raise UsageError(
                f"{s.where('patience')} needs validation examples: set "
                f"{s.where('validation_fraction')} above 0"
            )
        if s["select_by"] == "validation":
            raise UsageError(
                f"{s.where('select_by')} validation needs validation examples: set "
                f"{s.where('validation_fraction')} above 0"
            )


def _run_info(s: Settings) -> dict[str, Any]:
    """What config.json keeps about the run's setup, for reference (never keys)."""
    return {
        "scorer_base_url": _safe_urls(s["scorer_base_url"]),
        "optimizer_base_url": _safe_urls(s["optimizer_base_url"]),
        "max_concurrency": s["max_concurrency"],
        "rpm": s["rpm"],
        "tpm": s["tpm"],
        "cache_dir": None if s["no_cache"] else s["cache_dir"],
        "cache": cache_label(s["cache"]),  # a Redis URL's password masked
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


async def _run(s: Settings, run_dir: Path) -> tuple[OptimizationResult, list[str]] | None:
    """The run and its plan-vs-bill lines (None for a dry run)."""
    cfg, _ = configs(s)
    task = load_task(s["task"], data_dir=s["data_dir"])
    limits = s.pick(LimitSettings)
    dry_run = bool(s["dry_run"])
    async with engine_from_settings(s) as engine:
        scorer = build_model(engine, scorer_role(s), limits, plan_only=dry_run)
        optimizer = build_model(engine, optimizer_role(s), limits, plan_only=dry_run)
        board = Board(engine.budget, renderer_for(sys.stderr))
        progress = board.task()
        problem = PromptProblem(
            engine,
            scorer,
            task,
            train_fraction=s["train_fraction"],
            validation_fraction=s["validation_fraction"],
            split_seed=s["split_seed"],
            position=s["position"],
            qa_framing=qa_framing(s, s["position"]),
            starting=s["start"],
            test_limit=s["test_limit"],
            errors=error_policy(s),
            on_progress=progress.on_progress,
        )
        if s["batch"] and not dry_run:
            problem.batch = (batch_settings(s), run_dir)
        # The budget is the run's: what earlier sessions spent counts against the cap, and the
        # ledger records from the first paid call on (a --calibrate sample included).
        async with AsyncExitStack() as ledger:
            if not dry_run:
                await ledger.enter_async_context(
                    recording(
                        engine.budget,
                        run_dir,
                        resume=s["resume"],
                        earlier=lambda: logged_spend(run_dir),
                    )
                )
            calibrated = None
            if s["calibrate"] and not dry_run:
                calibrated = await calibrate(
                    problem.initial_solutions(), problem.data.train, scorer, s["calibrate"],
                    position=problem.position, qa_framing=problem.qa_framing,
                )  # fmt: skip
            plan_run = plan_evolution if is_evolutionary(cfg.strategy) else plan_optimization
            scorer_plan, optimizer_plan = plan_run(problem, optimizer, cfg)
            if calibrated is not None:
                scorer_plan.calibration = calibrated.paid
            plan = RunPlan(
                scorer_plan,
                upper_bound=True,
                optimizer_calls=optimizer_plan.calls,
                optimizer_cost_usd=optimizer_plan.est_cost_usd,
                shorten="--train-fraction / --steps",
                optimizer=optimizer_plan,
            )
            speed = speed_from_limits(scorer_plan, limits.rpm, limits.tpm)
            if dry_run:
                print(f"scorer (at most): {scorer_plan.describe()}")
                print(f"optimizer (at most): {optimizer_plan.describe()}")
                if cfg.racing:
                    print(
                        racing_plan_line(
                            scorer_plan.calls,
                            cfg.steps,
                            cfg.candidates_per_step,
                            problem.training_size(),
                        )
                    )
                if s["calibrate"]:
                    print(f"calibration: --calibrate {s['calibrate']} is paid only by a real run")
                print(dry_run_time(plan, speed))
                return None
            engine.budget.expected_call = per_call_spend(scorer_plan, scorer)
            async with board.showing():
                progress.announce(plan, speed)
                try:
                    result = await optimize(
                        problem, optimizer, cfg, run_dir=run_dir, resume=s["resume"],
                        info=_run_info(s), on_step=progress.on_step, on_phase=progress.on_phase,
                    )  # fmt: skip
                except BudgetExceeded as exc:
                    raise BudgetExceeded(stop_message(engine.budget, exc)) from None
        return result, plan_vs_bill(
            ("scorer plan vs bill", scorer_plan, scorer.stats.spend, scorer),
            ("optimizer plan vs bill", optimizer_plan, optimizer.stats.spend, optimizer),
        )


def cmd_optimize(args: argparse.Namespace) -> int:
    """`opro optimize`: 0 done, 1 nothing scored, 2 user error, 3 stopped by the budget."""
    s = settings_from_args(args)
    if s["task"] is None:
        raise UsageError(
            "give a task: --task synthetic/boolean_expressions (or task = ... in --config)"
        )
    configs(s)  # invalid combinations fail here, before any model is built
    _check_combinations(s)
    check_batch_scorer(s)
    if s["run_dir"] is None:
        if s["resume"]:
            raise UsageError(f"{s.where('resume')} needs the --run-dir of the run to continue")
        run_dir = Path("opro-runs") / f"{_slug(s['task'])}-{time.strftime('%Y%m%d-%H%M%S')}"
    else:
        run_dir = Path(s["run_dir"])
    try:
        outcome = asyncio.run(_run(s, run_dir))
    except RunDirError as exc:
        raise UsageError(str(exc)) from None
    except ModelCallError as exc:
        raise UsageError(f"the optimizer model failed: {exc}") from None
    except BudgetExceeded as exc:
        print(
            f"opro: stopped by the budget; the completed steps are in {run_dir}: {exc} "
            f"(--resume --run-dir {run_dir}; the cap is the run's total over all sessions)",
            file=sys.stderr,
        )
        write_run_report(run_dir)
        return 3
    except LedgerError as exc:
        raise UsageError(str(exc)) from None
    if outcome is None:  # dry run
        return 0
    result, bill = outcome
    print(render_summary(result.to_dict()), end="")
    for line in bill:
        print(line)
    print(f"run directory: {run_dir}")
    write_run_report(run_dir)
    return 0 if result.best is not None else 1
