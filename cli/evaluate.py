"""`opro evaluate`: score instructions on a task's examples and print one row per instruction.

Settings come from `cli/settings.py` (defaults, `--config`, flags); the command builds an
`Engine` and the scorer (`cli/common.py`), runs `Engine.evaluate` once under `asyncio.run`
with a progress display (`cli/progress.py`), prints the table and optionally writes the JSON
report. `--dry-run` prints the plan instead, with models that need no key, server or weights.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from opro.cli.batch import batch_ledger, batch_run_dir, batch_settings
from opro.cli.common import (
    build_model,
    default_position,
    engine_from_settings,
    error_policy,
    positive_int,
    scorer_role,
)
from opro.cli.help import add_command
from opro.cli.options import (
    BATCH,
    CACHE,
    CONFIG,
    LIMITS,
    PLANNED_COST,
    PROMPT,
    RUN_DIR,
    SCORER_MODELS,
    TASK,
    LimitSettings,
)
from opro.cli.progress import Board, renderer_for
from opro.cli.protocol import apply_protocol, qa_framing
from opro.cli.runplan import RunPlan, bill_line, dry_run_time, per_call_spend, speed_from_limits
from opro.cli.settings import Option, OptionGroup, Settings, UsageError, add_groups, resolve
from opro.engine.batch_evaluate import evaluate_in_batches
from opro.engine.budget import starvation_note
from opro.engine.calibrate import Calibration, calibrate
from opro.engine.evaluate import EvalReport
from opro.engine.model import Model
from opro.engine.plan import Plan, cost_of, plan_evaluation
from opro.engine.spend import Spend
from opro.tasks import load_task, split
from opro.tasks.prompts import Position
from opro.tasks.types import Example

INSTRUCTIONS = OptionGroup(
    "instructions",
    (
        Option("--instruction", "an instruction to score; repeat for more", kind="append"),
        Option("--instructions-file", "a file with one instruction per line", metavar="FILE"),
    ),
    exclusive=(("--instruction", "--instructions-file"),),
)
OUTPUT = OptionGroup(
    "output",
    (Option("--out", "write the JSON report here", metavar="FILE", default_text="none"),),
)
GROUPS = (
    CONFIG,
    TASK.plus(
        Option("--split", "which examples", choices=("train", "test", "all"), default="all"),
        Option("--limit", "use only the first N examples", type=positive_int, metavar="N"),
    ),
    INSTRUCTIONS,
    SCORER_MODELS,
    PROMPT,
    LIMITS,
    PLANNED_COST,
    CACHE,
    OUTPUT,
    BATCH,
    RUN_DIR.changed(
        "--run-dir",
        help="with --batch: where the batch state and the spend ledger are kept",
        default_text="none; --batch needs one",
    ).changed("--resume", help="with --batch: collect the batches an earlier session sent"),
)
EXAMPLES = (
    'opro evaluate --task synthetic/boolean_expressions --instruction "" '
    '--instruction "Let\'s think step by step."',
    "opro evaluate --task bbh/navigate --split train --instructions-file ins.txt "
    "--scorer openai/gpt-4o-mini --rpm 3000 --budget-usd 2 --out report.json",
    'opro evaluate --task gsm8k --instruction "Let\'s solve the problem." '
    "--scorer openai/gpt-4o-mini --dry-run",
    "opro evaluate --task gsm8k --instructions-file ins.txt --scorer openai/gpt-4o-mini "
    "--batch --run-dir runs/gsm8k-batch   (later: add --resume)",
)


def register(subparsers: Any) -> None:
    """Add the `evaluate` command to the `opro` parser's subcommands."""
    p = add_command(
        subparsers,
        "evaluate",
        "Score instructions on a task: each one's accuracy when a scorer model answers the "
        "task's questions with it.",
        EXAMPLES,
        "Answers are cached, so a rerun pays only for what is missing; --dry-run prints "
        "what it would cost first.",
        short="score instructions on a task",
        usage="opro evaluate --task NAME|FILE --instruction TEXT [--instruction TEXT ...] "
        "[options]",
    )
    add_groups(p, GROUPS)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The command's settings: defaults, the config file, flags, then the protocol's."""
    s = resolve(GROUPS, args, command="evaluate")
    apply_protocol(s)
    if s["task"] is None:
        raise UsageError(
            "give a task: --task synthetic/boolean_expressions (or task = ... in --config)"
        )
    if s["instruction"] is None and s["instructions_file"] is None:
        raise UsageError(
            "give instructions: --instruction TEXT (repeatable) or --instructions-file FILE"
        )
    return s


def _instructions(s: Settings) -> list[str]:
    if s["instruction"] is not None:
        return list(s["instruction"])
    path = Path(s["instructions_file"])
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        where = s.where("instructions_file")
        raise UsageError(f"{where}: cannot read {path}: {exc.strerror}") from exc
    found = [line for line in lines if line.strip()]
    if not found:
        raise UsageError(f"instructions file {path} has no instructions (one per line)")
    return found


def _examples(s: Settings) -> list[Example]:
    task = load_task(s["task"], data_dir=s["data_dir"])
    if s["split"] == "all":
        examples = list(task.examples)
    else:
        parts = split(task)
        examples = list(parts.train if s["split"] == "train" else parts.test)
    if s["limit"] is not None:
        examples = examples[: s["limit"]]
    if not examples:
        raise UsageError(f"task {s['task']} has no examples in split {s['split']}")
    return examples


def _accuracy_cell(accuracy: float | None, correct: int | None, graded: int) -> str:
    if accuracy is None or correct is None:
        return "n/a"
    return f"{100 * accuracy:5.1f}% {correct}/{graded}"


def _print_report(report: EvalReport) -> None:
    """One row per instruction: both accuracies, answers cut at the token limit, errors."""
    rows = [("", "strict", "reference", "truncated", f"instruction (best by {report.grading})")]
    for i, sc in enumerate(report.instructions):
        dup = f" (same as #{sc.duplicate_of})" if sc.duplicate_of is not None else ""
        err = f" ({sc.errors} errors)" if sc.errors else ""
        strict = _accuracy_cell(sc.accuracy, sc.correct, sc.graded)
        reference = _accuracy_cell(sc.accuracy_reference, sc.correct_reference, sc.graded)
        rows.append(
            (f"#{i}", strict, reference, str(sc.truncated), f"{sc.instruction!r}{dup}{err}")
        )
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
    for sc in report.instructions:
        for message in sc.error_messages[:1]:
            print(f"first error: {message}", file=sys.stderr)
            return


async def _run(
    s: Settings, instructions: list[str], examples: list[Example]
) -> tuple[EvalReport, str, str | None] | None:
    """The evaluation, its plan-vs-bill line and why the budget stopped it with money
    left, if it did (None for a dry run)."""
    position: Position = s["position"] or default_position(s)
    framing = qa_framing(s, position)
    limits = s.pick(LimitSettings)
    dry_run = bool(s["dry_run"])
    async with engine_from_settings(s) as eng:
        scorer = build_model(eng, scorer_role(s), limits, plan_only=dry_run)
        damage = _unreadable(scorer)
        calibration = Calibration()
        if s["calibrate"] and not dry_run:
            calibration = await calibrate(
                instructions, examples, scorer, s["calibrate"], position=position,
                qa_framing=framing,
            )  # fmt: skip
        # The evaluation finds the cache hits itself; a dry run has only the plan to ask.
        plan = plan_evaluation(
            instructions,
            examples,
            scorer,
            position=position,
            qa_framing=framing,
            check_cache=dry_run,
            calibrated=calibration.keys,
        )
        if s["calibrate"] and not dry_run:
            plan.calibration = calibration.paid
        speed = speed_from_limits(plan, limits.rpm, limits.tpm)
        if dry_run:
            print(plan.describe())
            if s["calibrate"]:
                print(f"calibration: --calibrate {s['calibrate']} is paid only by a real run")
            print(dry_run_time(RunPlan(plan), speed))
            return None
        eng.budget.expected_call = per_call_spend(plan, scorer)
        damage = _unreadable(scorer) - damage  # met by the plan, before the evaluation
        run_dir = batch_run_dir(s)
        if run_dir is not None:
            async with batch_ledger(eng.budget, run_dir, resume=s["resume"]):
                report = await evaluate_in_batches(
                    eng,
                    instructions,
                    examples,
                    scorer,
                    run_dir=run_dir,
                    settings=batch_settings(s),
                    resume=s["resume"],
                    notify=lambda line: print(f"opro: {line}", file=sys.stderr, flush=True),
                    position=position,
                    qa_framing=framing,
                    grading=s["grading"],
                    errors=error_policy(s),
                )
            report.totals.cache_unreadable += damage
            starved = starvation_note(eng.budget) if report.stopped == "budget" else None
            bill = evaluation_bill(plan, report, scorer)
            return report, f"{bill}; the plan is at the live price, batches bill less", starved
        board = Board(eng.budget, renderer_for(sys.stderr))
        task = board.task("evaluate")
        task.announce(RunPlan(plan, cached_at_start=True), speed)
        async with board.showing():
            report = await eng.evaluate(
                instructions,
                examples,
                scorer,
                position=position,
                qa_framing=framing,
                grading=s["grading"],
                on_progress=task.on_progress,
                errors=error_policy(s),
            )
        report.totals.cache_unreadable += damage
        starved = starvation_note(eng.budget) if report.stopped == "budget" else None
        return report, evaluation_bill(plan, report, scorer), starved


def _unreadable(scorer: Model) -> int:
    """Damaged cache entries met so far (the plan's reads count as the run's)."""
    return scorer.cache.stats.unreadable if scorer.cache is not None else 0


def evaluation_bill(plan: Plan, report: EvalReport, scorer: Model) -> str:
    """Plan vs bill for the pairs the evaluation called (the cached ones cost nothing)."""
    called = {
        sc.canonical: sc.n - sc.cache_hits for sc in report.instructions if sc.duplicate_of is None
    }
    tin, tout = plan.expected_for(called)
    made = sum(called.values())
    expected = Spend(made, round(tin), round(tout), cost_of(scorer, tin, tout))
    worst = None if plan.worst_cost_usd is None else plan.worst_cost_usd * made / max(1, plan.calls)
    line = bill_line("plan vs bill", expected, report.totals.spend, worst)
    if plan.calibration is not None:
        line += f"; calibration paid ${plan.calibration.cost_usd:.4f} before"
    return f"{line}; output expected from {plan.output_source or 'nothing'}"


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
    """`opro evaluate`: 0 done, 1 every pair failed, 2 user error, 3 stopped by the budget."""
    s = settings_from_args(args)
    batch_run_dir(s)  # a --batch without --run-dir fails before anything is read
    if s["batch"] and s["calibrate"]:
        raise UsageError(
            "--calibrate pays live calls before the plan; with --batch drop it (the batch's "
            "worst case is reserved before it is sent)"
        )
    out = Path(s["out"]) if s["out"] else None
    if out is not None:
        _writable(out)
    instructions = _instructions(s)
    examples = _examples(s)
    outcome = asyncio.run(_run(s, instructions, examples))
    if outcome is None:  # dry run
        return 0
    report, bill, starved = outcome
    _print_report(report)
    print(bill)
    if out is not None:
        try:
            data = {**report.to_dict(), "protocol": s["protocol"]}
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
        if starved is not None:
            print(f"opro: {starved}", file=sys.stderr)
        return 3
    return 1 if report.totals.errors == report.totals.pairs else 0
