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
from ..errors import OproError
from ..providers.errors import ProviderError
from ..tasks import TaskError, list_tasks, load_task, split
from ..tasks.prompts import POSITIONS, Position
from ..tasks.types import Example
from .cli_common import (
    UsageError,
    add_engine_options,
    default_position,
    engine_from_args,
    error_policy_from_args,
    positive_int,
    scorer_from_args,
)
from .cli_demo import cmd_demo
from .cli_demo import register as register_demo
from .cli_optimize import cmd_optimize
from .cli_optimize import register as register_optimize
from .evaluate import EvalReport, EvaluationAborted
from .plan import plan_evaluation
from .progress import ProgressBar


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
    ev.add_argument("--limit", type=positive_int, help="use only the first N examples")
    ins = ev.add_mutually_exclusive_group(required=True)
    ins.add_argument("--instruction", action="append", help="an instruction (repeatable)")
    ins.add_argument("--instructions-file", help="one instruction per line")
    ev.add_argument(
        "--position",
        choices=POSITIONS,
        help="default: A_begin for the embedded model, else Q_begin",
    )
    ev.add_argument("--no-qa", action="store_true", help="no Q:/A: framing around the prompt")
    ev.add_argument("--out", help="write the JSON report here")
    add_engine_options(ev)

    ts = sub.add_parser("tasks", help="list the available tasks")
    ts.add_argument("--data-dir", help="the paper's data release (default: $OPRO_DATA_DIR)")

    register_optimize(sub)
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


async def _run_evaluation(
    args: argparse.Namespace, instructions: list[str], examples: list[Example]
) -> EvalReport | None:
    position: Position = args.position or default_position(args)
    async with engine_from_args(args) as eng:
        scorer = scorer_from_args(eng, args)
        if args.dry_run:
            print(
                plan_evaluation(
                    instructions,
                    examples,
                    scorer,
                    position=position,
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
                position=position,
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
            return cmd_optimize(args)
        if args.command == "demo":
            return cmd_demo(args)
    except KeyboardInterrupt:
        print("opro: interrupted; finished results are in the cache", file=sys.stderr)
        return 130
    except (UsageError, TaskError, CacheError, ProviderError, EvaluationAborted, OproError) as exc:
        print(f"opro: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # invalid limit / retry values from the library's checks
        print(f"opro: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
