"""`sweep`: many tasks under one `Engine`, each an OPRO run (or an evaluation) of its own.

Data enters as task patterns and `SweepSettings`; it leaves as a sweep directory (sweep.json,
spend.json and one directory per task) and a `SweepResult`. Every task shares the engine's
limiter per connection, its cache, its single-flight table and its budget; the budget is
recorded in the sweep directory (`engine.ledger.recording`), so a cap given on resume is the
sweep's total over all sessions. Each task is a flow of the connection limiter: waiting calls
of one priority are served round-robin across tasks, optimizer calls (priority 0) still ahead
of scorer calls (priority 1), and at most `max_parallel_tasks` tasks run at once, the largest
first so that the tail, when few tasks are left, is short.

A task that fails (its data file is malformed, it has no training examples, its error policy
trips, its optimizer model fails) is recorded as failed with the reason and the others go
on, unless the failure is the connection's (a rejected key, an exhausted quota, an unknown
model): then no new task starts, since each would pay to fail the same way. A bug keeps its
traceback. When the budget runs out (or the server asks for a pause longer than the engine
waits), no new task starts, each running task ends as `stopped` when its next call cannot be
sent, and every task stays resumable: `resume=True` continues each unfinished task (an
optimize task from its run directory, an evaluation from the cache) and pays for nothing
finished. The session itself (queue, workers, sweep.json, events) is `runner.SweepRunner`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from opro.engine.engine import Engine
from opro.sweep.events import SweepEvent
from opro.sweep.patterns import expand_tasks, task_dirs
from opro.sweep.report import ReportError, write_reports
from opro.sweep.runner import SweepResult, SweepRunner, TaskOutcome, build_model
from opro.sweep.settings import SweepSettings, reopens_finished, resume_differences
from opro.sweep.state import SweepError, SweepRecord, TaskEntry, read_record

log = logging.getLogger("opro.sweep")

__all__ = ["SweepResult", "TaskOutcome", "build_model", "sweep"]


async def sweep(
    engine: Engine,
    settings: SweepSettings,
    *,
    run_dir: str | os.PathLike[str],
    resume: bool = False,
    on_event: Callable[[SweepEvent], None] | None = None,
    progress_every: float = 5.0,
    info: Mapping[str, Any] | None = None,
    runner: type[SweepRunner] | Callable[..., SweepRunner] = SweepRunner,
) -> SweepResult:
    """Run every task `settings.patterns` names under `engine`; see the module docstring.

    Use a fresh engine: its budget becomes the sweep's (recorded in `run_dir`). With
    `resume=True` the sweep in `run_dir` continues; empty `settings.patterns` means the
    stored ones, and a changed setting that would change results is refused before anything
    is sent. `info` is stored in sweep.json for reference only (never put keys in it).
    `runner` builds the session (`SweepRunner`'s arguments); `opro.cluster` passes one
    that runs each task on a Ray cluster.
    """
    if not (progress_every > 0):  # NaN fails too
        raise SweepError(f"progress_every must be > 0 seconds, got {progress_every!r}")
    directory = Path(run_dir)
    budget = engine.budget
    described = {
        **settings.describe(),
        "budget": {"max_usd": budget.max_usd, "max_tokens": budget.max_tokens},
    }
    if resume:
        record = read_record(directory)
        if not settings.patterns:
            settings = replace(settings, patterns=tuple(record.settings.get("tasks") or ()))
            described["tasks"] = list(settings.patterns)
        diffs = resume_differences(record.settings, described)
        if diffs:
            key, was, now = diffs[0]
            more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
            raise SweepError(
                f"cannot resume {directory}: {key} was {was!r} there but is {now!r} now{more}; "
                "use the sweep's settings or a new --run-dir"
            )
        if reopens_finished(record.settings, described):  # e.g. more steps: extend them all
            for entry in record.tasks:
                if entry.status == "done":
                    entry.status = "pending"
        record.settings, record.info = described, dict(info or {})
    else:
        names = expand_tasks(
            settings.patterns,
            data_dir=settings.data_dir,
            include_variants=settings.include_variants,
        )
        _check_fresh(directory)
        entries = [TaskEntry(n, d) for n, d in zip(names, task_dirs(names), strict=True)]
        record = SweepRecord(settings.mode, described, entries, info=dict(info or {}))
    session = runner(engine, settings, directory, record, on_event, progress_every)
    session.prepare()  # loads data and builds the models: user errors surface before any call
    async with session.recording(resume=resume):
        await session.run()
    result = session.result()
    try:  # tables, plots and report.html beside sweep.json (`opro report` rebuilds them)
        await asyncio.to_thread(write_reports, directory)
    except ReportError as exc:
        log.warning("no report for %s: %s (`opro report %s` retries)", directory, exc, directory)
    session.emit_progress(final=True)
    return result


def _check_fresh(directory: Path) -> None:
    if (directory / "sweep.json").exists():
        raise SweepError(
            f"{directory} already holds a sweep; pass --resume to continue it, or choose "
            "another --run-dir"
        )
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise SweepError(f"{directory} is not an empty directory; choose another --run-dir")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepError(f"cannot create {directory}: {exc.strerror}") from None
