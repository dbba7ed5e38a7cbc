"""`opro ablate AXIS --values V1,V2,...`: one OPRO run per value (and repeat), one engine.

The command takes every option of `opro optimize` (the base run, resolved by the same
layering: defaults, `--config`, flags) plus the ablation's own: the axis, `--values`,
`--repeats`, `--total-candidates` (per-step and one-shot), `--max-parallel-arms` and
`--progress-every`. The values are checked before the engine exists, so a bad one costs
nothing. The resolved options are stored in sweep.json (`info.cli`, secrets withheld) and the
plan in ablation.json, so `opro ablate --resume --run-dir DIR [--budget-usd 60]` needs no
other flag. Progress goes to stderr as a sweep's does; the comparison table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from opro.checks import SECONDS, IntRange
from opro.cli.common import UsageError, default_position, engine_from_settings
from opro.cli.help import add_command
from opro.cli.optimize import GROUPS as OPTIMIZE_GROUPS
from opro.cli.protocol import apply_protocol
from opro.cli.settings import Option, OptionGroup, Settings, add_groups, resolve
from opro.cli.sweep import (
    _NOT_STORED,
    _URLS,
    LIVE_EVERY_S,
    WITHHELD,
    LinePrinter,
    LiveBoard,
    _stored_options,
    sweep_settings,
)
from opro.engine.ledger import LedgerError
from opro.optimize.runlog import RunDirError
from opro.sweep.ablate import AXES, REPEATS, TOTAL, check_axis, plan_arms
from opro.sweep.ablate_run import AblationResult, ablate, read_plan
from opro.sweep.settings import SweepSettings
from opro.sweep.state import read_record
from opro.tasks import load_task

ABLATE = OptionGroup(
    "ablation",
    (
        Option(
            "--values",
            "the axis's values, comma-separated (start: instruction files, one per line)",
            metavar="V1,V2,...",
        ),
        Option(
            "--repeats",
            "runs per value, seeds --seed, --seed+1, ...",
            type=REPEATS,
            default=1,
            metavar="R",
        ),
        Option(
            "--total-candidates",
            "per-step / one-shot: the candidates every arm asks for in all",
            type=TOTAL,
            metavar="N",
            default_text="--steps x --candidates-per-step",
        ),
        Option(
            "--max-parallel-arms",
            "arms running at once",
            type=IntRange(1, 10_000),
            default=4,
            metavar="N",
        ),
        Option(
            "--progress-every",
            "seconds between progress lines",
            type=SECONDS,
            default=10.0,
            metavar="S",
        ),
    ),
)
GROUPS = (*OPTIMIZE_GROUPS, ABLATE)
EXAMPLES = (
    "opro ablate exemplars --values 0,3,10 --repeats 3 --task bbh/navigate \\\n"
    "    --scorer openai/gpt-4o-mini --optimizer openai/gpt-4o --steps 20 --budget-usd 30",
    "opro ablate per-step --values 1,2,4,8,16 --total-candidates 160 --task bbh/navigate",
    "opro ablate one-shot --values off,on --total-candidates 48 --task bbh/navigate",
    "opro ablate start --values plain.txt,stepwise.txt --task bbh/navigate",
    "opro ablate --resume --run-dir ablations/exemplars --budget-usd 60   # the new total",
    "opro report ablations/exemplars",
)


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "ablate",
        "Run one OPRO optimization per value of an ablation axis (and per repeat) on one task, "
        "under one engine: one rate limit per connection, one cache, one budget; then compare "
        "them (curves.png, table.md/.csv, results.json, report.html).",
        EXAMPLES,
        f"Axes: {', '.join(AXES)}. Every option of `opro optimize` sets the base run; the axis "
        "overrides one setting per arm. --run-dir is the ablation directory (default "
        "opro-ablations/<axis>-<time>), --budget-usd its total over all sessions. A prompt "
        "scored by one arm is not paid again by another; the report counts what that saved.",
        short="compare OPRO settings (an ablation axis) under one engine and budget",
        usage="opro ablate AXIS --values V1,V2,... --task NAME [options]",
    )
    p.add_argument("axis", nargs="?", metavar="AXIS", help=f"one of {', '.join(AXES)}")
    add_groups(p, GROUPS)


def _settings(args: argparse.Namespace) -> Settings:
    s = resolve(GROUPS, args, command="ablate")
    if s["batch"]:
        raise UsageError(f"{s.where('batch')}: opro ablate does not send batches yet; drop --batch")
    if s["resume"]:
        if s["run_dir"] is None:
            raise UsageError(f"{s.where('resume')} needs the --run-dir of the ablation")
        stored = read_record(Path(s["run_dir"])).info.get("cli")
        if isinstance(stored, dict):
            for dest, value in stored.items():
                if dest in s and dest not in _NOT_STORED:
                    s.derive(dest, value, f"the options stored in {s['run_dir']}/sweep.json")
            tasks = stored.get("tasks")
            if isinstance(tasks, list) and len(tasks) == 1:  # stored as a sweep stores it
                s.derive("task", tasks[0], f"the task stored in {s['run_dir']}/sweep.json")
    apply_protocol(s)
    if s["position"] is None:
        s.derive("position", default_position(s), "the scorer")
    for dest in _URLS:
        if s[dest] == WITHHELD:
            raise UsageError(f"give --{dest.replace('_', '-')} again: it was not stored")
    if not s["task"]:
        raise UsageError("an ablation needs the task it optimizes: give --task")
    # What `sweep_settings` reads: one task, optimizing, the arms as its tasks.
    s.values.update(
        tasks=[s["task"]],
        evaluate_only=False,
        include_variants=False,
        max_parallel_tasks=s["max_parallel_arms"],
    )
    return s


def _summary(result: AblationResult) -> None:
    from opro.sweep.ablate_report import VALUE_HEAD, read_comparison, sharing_text, value_rows

    try:
        c = read_comparison(result.directory)
    except Exception as exc:  # the table is a convenience; the files say the rest
        print(f"opro: warning: no comparison table: {exc}", file=sys.stderr)
        return
    rows = [VALUE_HEAD, *value_rows(c)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(VALUE_HEAD))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for outcome in result.outcomes:
        if outcome.status != "done":
            why = f" ({outcome.reason})" if outcome.reason else ""
            print(f"{outcome.status} {outcome.task}{why}")
    print(sharing_text(c))
    print(f"ablation directory: {result.directory}")


async def _run(
    s: Settings, settings: SweepSettings, run_dir: Path, axis: str | None
) -> AblationResult:
    info = {
        "cli": _stored_options(s, settings),
        "cache_dir": None if s["no_cache"] else s["cache_dir"],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    live = sys.stderr.isatty()
    display = LiveBoard(sys.stderr) if live else LinePrinter(s["progress_every"])
    every = min(s["progress_every"], LIVE_EVERY_S) if live else s["progress_every"]
    try:
        async with engine_from_settings(s) as engine:
            return await ablate(
                engine,
                settings,
                axis,
                _given(s, "values"),
                repeats=_given(s, "repeats"),
                total_candidates=_given(s, "total_candidates"),
                run_dir=run_dir,
                resume=s["resume"],
                on_event=display,
                progress_every=every,
                info=info,
            )
    finally:
        display.close()


def _arm_line(name: object, steps: object, per_step: object, seed: object) -> str:
    """What --dry-run prints per arm."""
    return f"{name}: {steps} steps x {per_step} candidates, seed {seed}"


def _given(s: Settings, dest: str) -> Any:
    """A plan setting: on resume only when given again (else the stored plan's)."""
    return s[dest] if not s["resume"] or s.given(dest) else None


def cmd_ablate(args: argparse.Namespace) -> int:
    """`opro ablate`: 0 all arms done, 1 an arm failed, 2 user error, 3 stopped (resumable)."""
    s = _settings(args)
    axis: str | None = args.axis
    if axis is None and not s["resume"]:
        raise UsageError(f"give the axis to ablate: one of {', '.join(AXES)}")
    if axis is not None:
        check_axis(axis)
    if not s["resume"] and not s["values"]:
        raise UsageError(f"give the values of {axis} with --values V1,V2,...")
    settings = sweep_settings(s)
    run_dir = (
        Path(s["run_dir"])
        if s["run_dir"] is not None
        else Path("opro-ablations") / f"{axis}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if s["resume"]:
        plan = read_plan(run_dir)  # a directory without an ablation: one line, nothing sent
        if s["dry_run"]:
            for arm in plan["arms"]:
                get = arm.get if isinstance(arm, dict) else {}.get
                print(_arm_line(get("name"), get("steps"), get("candidates_per_step"), get("seed")))
            return 0
    else:  # every value and the task are checked before the engine creates its cache
        assert axis is not None and settings.optimize is not None
        arms = plan_arms(
            axis,
            s["values"],
            settings.optimize,
            repeats=s["repeats"],
            total_candidates=s["total_candidates"],
        )
        load_task(s["task"], data_dir=s["data_dir"])
        if s["dry_run"]:
            for arm in arms:
                c = arm.config
                print(_arm_line(arm.name, c.steps, c.candidates_per_step, c.seed))
            return 0
    try:
        result = asyncio.run(_run(s, settings, run_dir, axis))
    except (RunDirError, LedgerError) as exc:
        raise UsageError(str(exc)) from None
    _summary(result)
    if result.stopped in ("budget", "rate limit"):
        print(
            f"opro: ablation stopped ({result.stopped}); every unfinished arm is resumable: "
            f"opro ablate --resume --run-dir {run_dir} (the budget is the ablation's total)",
            file=sys.stderr,
        )
        return 3
    return 0 if result.complete else 1
