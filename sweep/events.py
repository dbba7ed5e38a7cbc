"""What a running sweep reports to a progress display, as typed, immutable events.

`sweep(on_event=...)` receives, in order of occurrence: `TaskStarted` when a task begins (or
resumes), `TaskStep` after each optimization step of a task, `TaskFinished` when a task ends
(done, failed or stopped, with the reason), and `SweepProgress` snapshots (the totals, the
running tasks, the budget left) at every task state change, every `progress_every` seconds,
and once at the end with `final=True`. Events are plain data: a display may keep them, and
nothing in them can change the sweep.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from opro.sweep.state import SweepTotals, TaskStatus


@dataclass(frozen=True, slots=True)
class TaskStarted:
    task: str
    dir: str
    resumed: bool  # continues a run directory or evaluation an earlier session began


@dataclass(frozen=True, slots=True)
class TaskStep:
    """One logged optimization step of a task; counts are the task run's own so far."""

    task: str
    step: int
    steps: int
    best: float | None  # best training score so far
    calls: int
    cache_hits: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class TaskFinished:
    task: str
    status: TaskStatus
    reason: str | None


@dataclass(frozen=True, slots=True)
class TaskLive:
    """Where a running task stands, for one line of a progress display."""

    task: str
    step: int | None  # last logged step (optimize mode)
    steps: int | None
    best: float | None
    calls: int
    cache_hits: int
    pairs_done: int | None = None  # evaluate mode: pairs finished of `pairs_total`
    pairs_total: int | None = None


@dataclass(frozen=True, slots=True)
class SweepProgress:
    """A snapshot of the whole sweep; `rate_calls_per_s` is this session's average."""

    totals: SweepTotals
    running: tuple[TaskLive, ...]
    counts: Mapping[str, int]  # tasks per status
    budget_left_usd: float | None
    budget_left_tokens: int | None
    rate_calls_per_s: float
    final: bool = False


SweepEvent = TaskStarted | TaskStep | TaskFinished | SweepProgress
