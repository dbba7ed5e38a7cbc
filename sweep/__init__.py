"""Sweeps: many tasks under one engine (one limiter per connection, one cache, one budget),
and the reports (tables, plots, page) of what sweeps and runs produce (`opro.sweep.report`).

`await sweep(engine, SweepSettings(...), run_dir=...)` runs an OPRO optimization (or, with
`EvaluateOnly`, an evaluation of given instructions) on every task its patterns name, each
in its own directory under the sweep directory, sharing the engine fairly across tasks;
`sweep.json` records the settings, the tasks and where each stands (`opro.sweep.state`).
`await ablate(engine, settings, axis, values, repeats=R, run_dir=...)` runs one optimization
per value of an ablation axis on one task the same way and compares them (`sweep.ablate*`).
"""

from __future__ import annotations

from opro.sweep.ablate_run import AblationResult, ablate
from opro.sweep.events import (
    SweepEvent,
    SweepProgress,
    TaskFinished,
    TaskLive,
    TaskStarted,
    TaskStep,
)
from opro.sweep.patterns import BBH_SIZE_VARIANTS, expand_tasks
from opro.sweep.run import SweepResult, TaskOutcome, sweep
from opro.sweep.settings import EvaluateOnly, ModelSettings, ProblemSettings, SweepSettings
from opro.sweep.state import SweepError, SweepTotals, TaskEntry, TaskStatus

__all__ = [
    "BBH_SIZE_VARIANTS",
    "AblationResult",
    "EvaluateOnly",
    "ModelSettings",
    "ProblemSettings",
    "SweepError",
    "SweepEvent",
    "SweepProgress",
    "SweepResult",
    "SweepSettings",
    "SweepTotals",
    "TaskEntry",
    "TaskFinished",
    "TaskLive",
    "TaskOutcome",
    "TaskStarted",
    "TaskStatus",
    "TaskStep",
    "ablate",
    "expand_tasks",
    "sweep",
]
