"""The `opro` command: parse arguments, call the library once with `asyncio.run`.

Every failure a user can cause or fix (bad flags, missing data, a rejected key, an
unwritable cache) is an `OproError` and ends as one line on stderr and a non-zero exit,
never a traceback. Results already obtained are in the cache by then, so rerunning the same
command after a fix pays only for what is missing. Any other exception is a bug in this
package, not a user error: it keeps its traceback, followed by one line saying so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson

from opro.cli.common import (
    UsageError,
    add_engine_options,
    add_grading_option,
    default_position,
    engine_from_args,
    error_policy_from_args,
    positive_int,
    scorer_from_args,
)
from opro.cli.demo import cmd_demo
from opro.cli.demo import register as register_demo
from opro.cli.logs import add_logging_options, configure_logging
from opro.cli.optimize import cmd_optimize
from opro.cli.optimize import register as register_optimize
from opro.cli.progress import ProgressBar
from opro.cli.protocol import add_protocol_options, apply_protocol, qa_framing_from_args
from opro.engine.evaluate import EvalReport
from opro.engine.plan import plan_evaluation
from opro.errors import OproError
from opro.tasks import list_tasks, load_task, split
from opro.tasks.prompts import POSITIONS, Position
from opro.tasks.types import Example


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr, like every other error.

    Every parser of the command is one (subcommands inherit the class), so each carries
    `-v/--verbose` and `--log-file`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_logging_options(self)

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
    add_grading_option(ev)
    add_engine_options(ev)
    add_protocol_options(ev)

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


def _accuracy_cell(accuracy: float | None, correct: int | None, graded: int) -> str:
    if accuracy is None or correct is None:
        return "n/a"
    return f"{100 * accuracy:5.1f}% {correct}/{graded}"


def _print_report(report: EvalReport) -> None:
    """One row per instruction: both accuracies, answers cut at the token limit, errors."""
    rows = [("", "strict", "reference", "truncated", f"instruction (best by {report.grading})")]
    for i, s in enumerate(report.instructions):
        dup = f" (same as #{s.duplicate_of})" if s.duplicate_of is not None else ""
        err = f" ({s.errors} errors)" if s.errors else ""
        strict = _accuracy_cell(s.accuracy, s.correct, s.graded)
        reference = _accuracy_cell(s.accuracy_reference, s.correct_reference, s.graded)
        rows.append((f"#{i}", strict, reference, str(s.truncated), f"{s.instruction!r}{dup}{err}"))
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    for row in rows:
        cells = [row[0].ljust(widths[0]), *(row[c].rjust(widths[c]) for c in (1, 2, 3))]
        print("  ".join([*cells, row[4]]))
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
    qa_framing = qa_framing_from_args(args, position)
    async with engine_from_args(args) as eng:
        scorer = scorer_from_args(eng, args)
        if args.dry_run:
            print(
                plan_evaluation(
                    instructions,
                    examples,
                    scorer,
                    position=position,
                    qa_framing=qa_framing,
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
                qa_framing=qa_framing,
                grading=args.grading,
                on_progress=bar,
                errors=error_policy_from_args(args),
            )
        finally:
            bar.close()


def _writable(path: Path) -> None:
    """Fail before anything is spent if the report could not be written afterwards.

    Permission bits do not tell (root ignores them; a directory, a read-only file system or
    an over-long name do not show in them), so the file itself is opened for writing, without
    truncating it, and removed again if this created it.
    """
    parent = path.parent if str(path.parent) else Path(".")
    try:
        if not parent.is_dir():
            raise UsageError(f"cannot write {path}: directory {parent} does not exist")
        if path.is_dir():
            raise UsageError(f"cannot write {path}: it is a directory; give --out a file name")
        existed = path.exists()
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, 0o644))
        if not existed:
            path.unlink(missing_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    apply_protocol(args)
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
            data = {**report.to_dict(), "protocol": args.protocol}
            out.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
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
        configure_logging(args)
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
    except Exception as exc:
        user_error = _user_error(exc)
        if user_error is None:
            traceback.print_exc()
            print(BUG_REPORT, file=sys.stderr)
            return 1
        print(f"opro: error: {' '.join(str(user_error).splitlines())}", file=sys.stderr)
        return 2
    return 0


BUG_REPORT = (
    "opro: internal error: this is a bug in opro-engine, not a problem with your input; "
    "please report it to the opro-engine maintainers with the traceback above and the command "
    "you ran (remove any API keys)"
)


def _user_error(exc: BaseException) -> OproError | None:
    """The error to show as one line, or None for a bug (anything that is not an OproError).

    Concurrent code raises groups: a group whose every member is a user error is one too.
    """
    if isinstance(exc, OproError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [_user_error(e) for e in exc.exceptions]
        if found and all(e is not None for e in found):
            return found[0]
    return None


if __name__ == "__main__":
    sys.exit(main())
