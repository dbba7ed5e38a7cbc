"""`opro optimize`: run OPRO on a task from the command line or a TOML file.

Settings come from three layers: the option's default, then `--config run.toml` (top-level
keys named like the long options, dashes or underscores), then the flags actually given. To
tell "given" from "default", every option of this command is registered with default None and
its real default is kept aside (`_DEFAULTS`). The command builds an `Engine`, the scorer and
optimizer `Model`s and a `PromptProblem`, and calls `optimize` once under `asyncio.run`.
Every user error ends as one `opro: error: ...` line; a budget stop says how to continue.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opro.checks import (
    CANDIDATES,
    COUNT,
    FRACTION,
    MAX_TOKENS,
    POSITIVE_COUNT,
    SEED,
    STEPS,
    TEMPERATURE,
)
from opro.cli.common import (
    DEFAULT_MODEL,
    UsageError,
    add_engine_options,
    add_grading_option,
    default_position,
    engine_from_args,
    error_policy_from_args,
    positive_int,
    scorer_from_args,
)
from opro.cli.protocol import (
    add_meta_protocol_options,
    add_protocol_options,
    apply_protocol,
    max_shown_setting,
    min_score_setting,
    qa_framing_from_args,
)
from opro.engine.budget import BudgetExceeded
from opro.engine.ledger import LedgerError, recording, stop_message
from opro.engine.model import ModelCallError
from opro.engine.prices import parse_price, price_option
from opro.engine.spend import Spend
from opro.optimize.loop import OptimizationResult, OptimizeConfig, StepInfo, optimize
from opro.optimize.metaprompt import BUCKETS, EXEMPLARS, ORDERS, STYLES, MetaPromptConfig
from opro.optimize.plan import plan_optimization
from opro.optimize.problem import PromptProblem
from opro.optimize.runlog import RunDirError, logged_spend, render_summary
from opro.tasks import load_task
from opro.tasks.prompts import POSITIONS

OPTIMIZER_MAX_TOKENS = 512
EMBEDDED_OPTIMIZER_MAX_TOKENS = 96
_DEFAULTS_KEY = "_optimize_defaults"
_NOT_FROM_TOML = {"config", "command", _DEFAULTS_KEY}


def _buckets(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        return BUCKETS(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be none or {BUCKETS.describe()}, got {text[:40]!r}"
        ) from None


def register(subparsers: Any) -> None:
    """Add the `optimize` command to the `opro` parser's subcommands."""
    p = subparsers.add_parser("optimize", help="search for a better instruction (OPRO)")
    p.add_argument("--config", help="TOML file holding any of these settings; flags override it")
    p.add_argument("--task", help="task name or path to a .jsonl/.csv file")
    p.add_argument(
        "--optimizer",
        help=f"provider/model that proposes instructions (default: {DEFAULT_MODEL})",
    )
    p.add_argument("--optimizer-base-url", help="OpenAI-compatible server for the optimizer")
    p.add_argument("--optimizer-api", choices=["chat", "completions"], help="API flavour")
    p.add_argument(
        "--optimizer-max-tokens",
        type=MAX_TOKENS,
        help=f"default {OPTIMIZER_MAX_TOKENS}; {EMBEDDED_OPTIMIZER_MAX_TOKENS} for the "
        "embedded model, whose longer answers ramble past the 500-character limit",
    )
    p.add_argument(
        "--optimizer-price",
        type=price_option,
        help="optimizer price IN,OUT in USD per million tokens",
    )
    p.add_argument("--steps", type=STEPS, default=200)
    p.add_argument("--candidates-per-step", type=CANDIDATES, default=8)
    p.add_argument("--temperature", type=TEMPERATURE, default=1.0, help="optimizer temperature")
    p.add_argument(
        "--temperature-end", type=TEMPERATURE, help="rise linearly to this by the last step"
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of the exemplar draws")
    p.add_argument(
        "--position",
        choices=POSITIONS,
        help="default: A_begin for the embedded scorer, else Q_begin",
    )
    p.add_argument("--no-qa", action="store_true", help="no Q:/A: framing around the prompt")
    p.add_argument(
        "--meta-prompt",
        choices=("auto", *STYLES),
        default="auto",
        help="default auto: gpt for GPT optimizers, else instruction-tuned (as the paper)",
    )
    p.add_argument(
        "--max-shown",
        type=max_shown_setting,
        help="earlier solutions shown: N, all, or auto (20; all in the pretrained style); "
        "default 20 (--protocol paper: auto)",
    )
    p.add_argument("--order", choices=ORDERS, default="ascending")
    p.add_argument("--score-buckets", type=_buckets, default=100, help="100, 20 or none")
    p.add_argument(
        "--min-score",
        type=min_score_setting,
        help="hide earlier solutions scoring below this: a number, none, or auto (0.3 for a "
        "GPT scorer, else 0; none in the pretrained style); default none (--protocol paper: auto)",
    )
    p.add_argument("--exemplars", type=EXEMPLARS, default=3, help="task examples shown")
    p.add_argument("--exemplars-first", action="store_true", help="examples before solutions")
    p.add_argument("--start", action="append", help="a starting instruction (repeatable)")
    p.add_argument("--train-fraction", type=FRACTION, help="default: the task's own")
    p.add_argument("--validation-fraction", type=FRACTION, default=0.0)
    p.add_argument("--split-seed", type=SEED, default=0)
    p.add_argument("--eval-every", type=POSITIVE_COUNT, default=3, help="validation interval")
    p.add_argument("--patience", type=POSITIVE_COUNT, help="stop after P validations w/o gain")
    p.add_argument("--test-top", type=COUNT, default=3, help="0: no final table")
    p.add_argument("--select-by", choices=["train", "validation"], default="train")
    p.add_argument("--test-limit", type=positive_int, help="use only the first N test examples")
    p.add_argument("--run-dir", help="where the run is logged (default: opro-runs/<task>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    add_grading_option(p)
    add_meta_protocol_options(p)
    add_engine_options(p)
    add_protocol_options(p)
    defaults: dict[str, Any] = {}
    for action in p._actions:
        if action.dest in ("help", "config") or action.default is argparse.SUPPRESS:
            continue
        defaults[action.dest] = action.default
    p.set_defaults(**dict.fromkeys(defaults), **{_DEFAULTS_KEY: (defaults, p)})


def _toml_value(action: argparse.Action, key: str, value: Any, where: str) -> Any:
    if isinstance(value, dict):
        raise UsageError(f"{where}: {key} must be a value, not a table")
    if action.nargs == 0:  # a flag
        if not isinstance(value, bool):
            raise UsageError(f"{where}: {key} must be true or false")
        return value if value else None
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            raise UsageError(f"{where}: {key} must be a string or a list of strings")
        return list(items)
    if isinstance(value, bool | list):
        raise UsageError(f"{where}: {key} must be a single value")
    try:
        converted = action.type(str(value)) if callable(action.type) else str(value)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise UsageError(f"{where}: {key}: {exc}") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise UsageError(f"{where}: {key} must be one of {choices}, got {value!r}")
    return converted


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Defaults, overlaid by the TOML file, overlaid by the flags given."""
    defaults, parser = getattr(args, _DEFAULTS_KEY)
    layered = dict(defaults)
    if args.config:
        path = Path(args.config)
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
        actions = {a.dest: a for a in parser._actions if a.dest in defaults}
        for key, value in table.items():
            dest = key.replace("-", "_")
            if dest not in actions or dest in _NOT_FROM_TOML:
                raise UsageError(f"{path}: unknown setting {key!r} (see opro optimize --help)")
            converted = _toml_value(actions[dest], key, value, str(path))
            if converted is not None:
                layered[dest] = converted
    for dest in defaults:
        given = getattr(args, dest)
        if given is not None:
            layered[dest] = given
    s = argparse.Namespace(**layered, command=args.command, config=args.config)
    apply_protocol(s)
    # Defaults that depend on which models are used (the embedded one has its own).
    if s.position is None:
        s.position = default_position(s)
    if s.optimizer_max_tokens is None:
        s.optimizer_max_tokens = (
            EMBEDDED_OPTIMIZER_MAX_TOKENS if s.optimizer is None else OPTIMIZER_MAX_TOKENS
        )
    return s


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(text).stem if "." in text else text).strip("-")


def _safe_url(url: str | None) -> str | None:
    """A base URL fit for config.json: no user, password, query or fragment."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _configs(s: argparse.Namespace) -> tuple[OptimizeConfig, MetaPromptConfig]:
    meta = MetaPromptConfig(
        style=s.meta_prompt,
        max_shown=s.max_shown,
        order=s.order,
        score_buckets=s.score_buckets,
        min_score=s.min_score,
        exemplars=s.exemplars,
        exemplars_first=bool(s.exemplars_first),
        exemplar_selection=s.exemplar_selection,
        extraction=s.extraction,
    )
    cfg = OptimizeConfig(
        steps=s.steps,
        candidates_per_step=s.candidates_per_step,
        temperature=s.temperature,
        temperature_end=s.temperature_end,
        seed=s.seed,
        meta=meta,
        eval_every=s.eval_every,
        patience=s.patience,
        test_top=s.test_top,
        select_by=s.select_by,
        grading=s.grading,
        protocol=s.protocol,
    )
    return cfg, meta


def _progress(info: StepInfo) -> None:
    t = info.totals
    best = f"{100 * info.best.score:.1f}%" if info.best is not None else "-"
    # The ledger's run totals (all sessions) when the budget records them, else this run's.
    run = Spend.from_dict(info.record.get("spend")) or t.spend
    print(
        f"step {info.step}/{info.steps}  best train {best}  calls {run.calls}  "
        f"cache hits {t.cache_hits}  cost ${run.cost_usd:.4f}  errors {t.errors}",
        file=sys.stderr,
        flush=True,
    )


async def _run(s: argparse.Namespace, run_dir: Path) -> OptimizationResult | None:
    cfg, _ = _configs(s)
    task = load_task(s.task, data_dir=s.data_dir)
    async with engine_from_args(s) as engine:
        scorer = scorer_from_args(engine, s)
        optimizer = engine.model(
            s.optimizer or DEFAULT_MODEL,
            base_url=s.optimizer_base_url,
            api=s.optimizer_api,
            max_concurrency=s.max_concurrency,
            rpm=s.rpm,
            tpm=s.tpm,
            max_tokens=s.optimizer_max_tokens,
            price=parse_price(s.optimizer_price) if s.optimizer_price else None,
            priority=0,
        )
        problem = PromptProblem(
            engine,
            scorer,
            task,
            train_fraction=s.train_fraction,
            validation_fraction=s.validation_fraction,
            split_seed=s.split_seed,
            position=s.position,
            qa_framing=qa_framing_from_args(s, s.position),
            starting=s.start,
            test_limit=s.test_limit,
            errors=error_policy_from_args(s),
        )
        if s.dry_run:
            scorer_plan, optimizer_plan = plan_optimization(problem, optimizer, cfg)
            print(f"scorer (at most): {scorer_plan.describe()}")
            print(f"optimizer (at most): {optimizer_plan.describe()}")
            return None
        info = {
            "scorer_base_url": _safe_url(s.scorer_base_url),
            "optimizer_base_url": _safe_url(s.optimizer_base_url),
            "max_concurrency": s.max_concurrency,
            "rpm": s.rpm,
            "tpm": s.tpm,
            "cache_dir": None if s.no_cache else s.cache_dir,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        # The budget is the run's: what earlier sessions spent counts against the cap.
        async with recording(
            engine.budget, run_dir, resume=s.resume, earlier=lambda: logged_spend(run_dir)
        ):
            try:
                return await optimize(
                    problem, optimizer, cfg, run_dir=run_dir, resume=s.resume, info=info,
                    on_step=_progress,
                )  # fmt: skip
            except BudgetExceeded as exc:
                raise BudgetExceeded(stop_message(engine.budget, exc)) from None


def cmd_optimize(args: argparse.Namespace) -> int:
    """`opro optimize`: 0 done, 1 nothing scored, 2 user error, 3 stopped by the budget."""
    s = resolve(args)
    if s.task is None:
        raise UsageError(
            "give a task: --task synthetic/boolean_expressions (or task = ... in --config)"
        )
    _configs(s)  # invalid combinations fail here, before any model is built
    if s.run_dir is None:
        if s.resume:
            raise UsageError("--resume needs the --run-dir of the run to continue")
        run_dir = Path("opro-runs") / f"{_slug(s.task)}-{time.strftime('%Y%m%d-%H%M%S')}"
    else:
        run_dir = Path(s.run_dir)
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
        return 3
    except LedgerError as exc:
        raise UsageError(str(exc)) from None
    if outcome is None:  # dry run
        return 0
    result = outcome
    print(render_summary(result.to_dict()), end="")
    print(f"run directory: {run_dir}")
    return 0 if result.best is not None else 1
