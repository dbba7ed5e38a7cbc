"""The `opro` command: parse arguments, call the library once with `asyncio.run`.

Every failure a user can cause or fix (bad flags, missing data, a rejected key, an
unwritable cache) ends as one line on stderr and a non-zero exit, never a traceback.
Results already obtained are in the cache by then, so rerunning the same command after a
fix pays only for what is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import orjson

from ..caches.disk import CacheError
from ..providers.errors import ProviderError
from ..tasks import TaskError, list_tasks, load_task, split
from ..tasks.prompts import POSITIONS
from ..tasks.types import Example
from .budget import Budget
from .engine import Engine
from .evaluate import ErrorPolicy, EvalReport, EvaluationAborted
from .limits import DEFAULT_MAX_CONCURRENCY
from .model import Model
from .plan import plan_evaluation
from .prices import parse_price
from .progress import ProgressBar
from .retry import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_S, RetryPolicy


class UsageError(Exception):
    """Bad input on the command line; the message says what to change."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """Options every command that calls a scorer shares."""
    g = p.add_argument_group("engine")
    g.add_argument("--data-dir", help="the paper's data release (default: $OPRO_DATA_DIR)")
    g.add_argument("--scorer", default=None, help="provider/model, e.g. openai/gpt-4o-mini")
    g.add_argument("--scorer-base-url", help="OpenAI-compatible server (default: $OPENAI_BASE_URL)")
    g.add_argument("--scorer-api", choices=["chat", "completions"], help="API flavour")
    g.add_argument("--max-tokens", type=_positive_int, default=256, help="scorer max tokens")
    g.add_argument("--max-concurrency", type=_positive_int, default=DEFAULT_MAX_CONCURRENCY)
    g.add_argument("--rpm", type=_positive_float, help="requests/minute (default: adapt to 429s)")
    g.add_argument("--tpm", type=_positive_float, help="tokens/minute")
    g.add_argument("--max-attempts", type=_positive_int, default=DEFAULT_MAX_ATTEMPTS)
    g.add_argument(
        "--timeout", type=_positive_float, default=DEFAULT_TIMEOUT_S, help="seconds per attempt"
    )
    g.add_argument("--max-errors", type=int, help="abort after more failed pairs than this")
    g.add_argument(
        "--max-error-rate",
        type=float,
        default=0.2,
        help="abort when more than this fraction of pairs fail (default 0.2)",
    )
    g.add_argument("--budget-usd", type=_positive_float, help="hard cap on the run's cost")
    g.add_argument("--budget-tokens", type=_positive_int, help="hard cap on the run's tokens")
    g.add_argument("--price", help="scorer price IN,OUT in USD per million tokens")
    g.add_argument("--dry-run", action="store_true", help="print calls, tokens and cost; stop")
    cache = g.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", help="result cache (default: $OPRO_CACHE_DIR or user cache)")
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="opro", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="score instructions on a task")
    ev.add_argument("--task", required=True, help="task name or path to a .jsonl/.csv file")
    ev.add_argument("--split", choices=["train", "test", "all"], default="all")
    ev.add_argument("--limit", type=_positive_int, help="use only the first N examples")
    ins = ev.add_mutually_exclusive_group(required=True)
    ins.add_argument("--instruction", action="append", help="an instruction (repeatable)")
    ins.add_argument("--instructions-file", help="one instruction per line")
    ev.add_argument("--position", choices=POSITIONS, default="Q_begin")
    ev.add_argument("--no-qa", action="store_true", help="no Q:/A: framing around the prompt")
    ev.add_argument("--out", help="write the JSON report here")
    add_engine_options(ev)

    ts = sub.add_parser("tasks", help="list the available tasks")
    ts.add_argument("--data-dir", help="the paper's data release (default: $OPRO_DATA_DIR)")

    from .cli_optimize import register as register_optimize  # it imports this module

    register_optimize(sub)
    from .cli_demo import register as register_demo  # it imports this module too

    register_demo(sub)
    return parser


def _instructions(args: argparse.Namespace) -> list[str]:
    if args.instruction is not None:
        return list(args.instruction)
    path = Path(args.instructions_file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read instructions file {path}: {exc.strerror}") from exc
    found = [line for line in lines if line.strip()]
    if not found:
        raise UsageError(f"instructions file {path} has no instructions (one per line)")
    return found


def _examples(args: argparse.Namespace) -> list[Example]:
    task = load_task(args.task, data_dir=args.data_dir)
    if args.split == "all":
        examples = list(task.examples)
    else:
        parts = split(task)
        examples = list(parts.train if args.split == "train" else parts.test)
    if args.limit is not None:
        examples = examples[: args.limit]
    if not examples:
        raise UsageError(f"task {args.task} has no examples in split {args.split}")
    return examples


def _print_report(report: EvalReport) -> None:
    for i, s in enumerate(report.instructions):
        acc = "  n/a " if s.accuracy is None else f"{100 * s.accuracy:5.1f}%"
        dup = f" (same as #{s.duplicate_of})" if s.duplicate_of is not None else ""
        err = f", {s.errors} errors" if s.errors else ""
        print(f"#{i} {acc}  {s.correct}/{s.graded}{err}  {s.instruction!r}{dup}")
    t = report.totals
    print(
        f"pairs={t.pairs} calls={t.calls} cache_hits={t.cache_hits} errors={t.errors} "
        f"429s={t.n429} tokens={t.tokens_in}+{t.tokens_out} cost=${t.cost_usd:.4f} "
        f"wall={t.wall_s:.2f}s"
    )
    for s in report.instructions:
        for message in s.error_messages[:1]:
            print(f"first error: {message}", file=sys.stderr)
            return


def engine_from_args(args: argparse.Namespace) -> Engine:
    """The engine the shared options describe (retries, cache, budget)."""
    retry = RetryPolicy(max_attempts=args.max_attempts, timeout=args.timeout)
    budget = Budget(max_usd=args.budget_usd, max_tokens=args.budget_tokens)
    return Engine(cache_dir=args.cache_dir, use_cache=not args.no_cache, retry=retry, budget=budget)


def error_policy_from_args(args: argparse.Namespace) -> ErrorPolicy:
    return ErrorPolicy(max_errors=args.max_errors, max_error_rate=args.max_error_rate)


def scorer_from_args(engine: Engine, args: argparse.Namespace) -> Model:
    return engine.model(
        args.scorer,
        base_url=args.scorer_base_url,
        api=args.scorer_api,
        max_concurrency=args.max_concurrency,
        rpm=args.rpm,
        tpm=args.tpm,
        max_tokens=args.max_tokens,
        price=parse_price(args.price) if args.price else None,
    )


async def _run_evaluation(
    args: argparse.Namespace, instructions: list[str], examples: list[Example]
) -> EvalReport | None:
    async with engine_from_args(args) as eng:
        scorer = scorer_from_args(eng, args)
        if args.dry_run:
            print(
                plan_evaluation(
                    instructions,
                    examples,
                    scorer,
                    position=args.position,
                    qa_framing=not args.no_qa,
                ).describe()
            )
            return None
        bar = ProgressBar(label="evaluate ")
        try:
            return await eng.evaluate(
                instructions,
                examples,
                scorer,
                position=args.position,
                qa_framing=not args.no_qa,
                on_progress=bar,
                errors=error_policy_from_args(args),
            )
        finally:
            bar.close()


def _writable(path: Path) -> None:
    """Fail before anything is spent if the report could not be written afterwards."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"cannot write {path}: permission denied")


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.scorer is None:
        raise UsageError("give a scorer: --scorer provider/model (e.g. simulated/demo)")
    out = Path(args.out) if args.out else None
    if out is not None:
        _writable(out)
    instructions = _instructions(args)
    examples = _examples(args)
    report = asyncio.run(_run_evaluation(args, instructions, examples))
    if report is None:  # dry run
        return 0
    _print_report(report)
    if out is not None:
        try:
            out.write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror}") from exc
    if report.stopped == "budget":
        print(
            f"opro: stopped by the budget after {report.totals.pairs} of "
            f"{report.totals.pairs + report.totals.skipped} pairs; everything paid for is "
            "cached: rerun with a larger budget to finish",
            file=sys.stderr,
        )
        return 3
    return 1 if report.totals.errors == report.totals.pairs else 0


def cmd_tasks(args: argparse.Namespace) -> int:
    rows = list_tasks(args.data_dir)
    width = max(len(r.name) for r in rows)
    for r in rows:
        print(f"{r.name:<{width}}  {r.count:>6}  {r.answer_type}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "tasks":
            return cmd_tasks(args)
        if args.command == "optimize":
            from .cli_optimize import cmd_optimize

            return cmd_optimize(args)
        if args.command == "demo":
            from .cli_demo import cmd_demo

            return cmd_demo(args)
    except KeyboardInterrupt:
        print("opro: interrupted; finished results are in the cache", file=sys.stderr)
        return 130
    except (UsageError, TaskError, CacheError, ProviderError, EvaluationAborted) as exc:
        print(f"opro: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # invalid limit / retry values from the library's checks
        print(f"opro: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
