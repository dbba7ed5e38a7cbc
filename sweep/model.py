"""The records a report is rendered from: what `reading` found on disk, nothing computed twice.

A `Report` has one `TaskReport` per task (a single run is a report of one task), the
columns of its table (an optimize sweep: the found instruction and the paper's two baselines;
an evaluate sweep: every instruction given) and the sweep's totals. Accuracies are fractions
(0 to 1) by both gradings; renderers turn them into percent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from opro.engine.spend import Spend
from opro.errors import OproError

# A task's status in sweep.json; "unfinished" is a single run without results.json yet.
TASK_STATUSES = ("pending", "running", "done", "failed", "stopped")


class ReportError(OproError):
    """A file the report needs is missing or malformed; the message names it."""


@dataclass(frozen=True, slots=True)
class Acc:
    """One accuracy by our strict rules and by the paper's reference rules (either unknown)."""

    strict: float | None
    reference: float | None

    def by(self, grading: str) -> float | None:
        return self.reference if grading == "reference" else self.strict


@dataclass(frozen=True, slots=True)
class Column:
    """An instruction column of the table: `text` is fixed for a baseline or an evaluated
    instruction, None for the found instruction (it differs per task)."""

    key: str
    label: str
    text: str | None
    baseline: bool


@dataclass(frozen=True, slots=True)
class ShownInstruction:
    """An instruction listed on the page under its task, with its accuracy per split."""

    role: str
    text: str
    scores: dict[str, Acc]


@dataclass(slots=True)
class TaskReport:
    task: str
    dir: str
    status: str
    reason: str | None = None
    progress: str | None = None  # where an unfinished task got to
    grading: str = "strict"  # the accuracy the task optimized (or ranked) by
    cells: dict[str, dict[str, Acc]] = field(default_factory=dict)  # column -> split -> Acc
    found: str | None = None  # the found instruction (optimize mode)
    shown: list[ShownInstruction] = field(default_factory=list)
    points: list[tuple[int, float]] = field(default_factory=list)  # (step, score) per candidate
    last_step: int | None = None  # the last step logged
    cost: Spend | None = None
    cache_hits: int | None = None
    n429: int | None = None
    wall_s: float | None = None

    @property
    def finished(self) -> bool:
        """Whether its accuracies are final (a done task with its results on disk)."""
        return self.status == "done" and bool(self.cells)

    def acc(self, column: str, split: str) -> Acc | None:
        return self.cells.get(column, {}).get(split)

    def delta(self, column: str, baseline: str, split: str, grading: str) -> float | None:
        """`column`'s accuracy minus `baseline`'s on `split` (a fraction), or None."""
        a, b = self.acc(column, split), self.acc(baseline, split)
        x, y = (a.by(grading) if a else None), (b.by(grading) if b else None)
        return None if x is None or y is None else x - y


@dataclass(frozen=True, slots=True)
class Totals:
    """The sweep's totals: from sweep.json (one engine, counted once) or summed over tasks."""

    spend: Spend
    cache_hits: int
    n429: int | None
    wall_s: float | None
    source: str

    @property
    def cache_hit_rate(self) -> float | None:
        """Cache hits per result looked up (hits + calls; retries count as calls)."""
        looked_up = self.cache_hits + self.spend.calls
        return self.cache_hits / looked_up if looked_up else None

    @classmethod
    def sum_of(cls, tasks: list[TaskReport]) -> Totals:
        spend = sum((t.cost for t in tasks if t.cost is not None), Spend())
        n429 = [t.n429 for t in tasks if t.n429 is not None]
        walls = [t.wall_s for t in tasks if t.wall_s is not None]
        return cls(
            spend=spend,
            cache_hits=sum(t.cache_hits or 0 for t in tasks),
            n429=sum(n429) if n429 else None,
            # Tasks of a sweep overlap in time, so only a single task's wall time is known.
            wall_s=walls[0] if len(tasks) == 1 and walls else None,
            source="the run" if len(tasks) == 1 else "the sum over tasks",
        )


@dataclass(slots=True)
class Report:
    kind: Literal["sweep", "run"]
    mode: Literal["optimize", "evaluate"]
    directory: Path
    settings: dict[str, Any]
    columns: list[Column]
    splits: list[str]
    tasks: list[TaskReport]
    totals: Totals

    @property
    def delta_split(self) -> str:
        """The split deltas are taken on: test for an optimize run (as the paper's bars)."""
        return "test" if "test" in self.splits else self.splits[-1]

    @property
    def grading(self) -> str:
        """The accuracy the deltas and plots use: the one the tasks were optimized by."""
        gradings = {t.grading for t in self.tasks if t.finished}
        return gradings.pop() if len(gradings) == 1 else "strict"

    def pairs(self) -> list[tuple[Column, Column]]:
        """(instruction, baseline) pairs the deltas compare."""
        return [(c, b) for c in self.columns if not c.baseline for b in self.columns if b.baseline]

    def status_counts(self) -> dict[str, int]:
        """How many tasks are in each status, in the order a sweep moves through them."""
        order = ("done", "unfinished", "running", "stopped", "failed", "pending")
        counts = {s: sum(t.status == s for t in self.tasks) for s in order}
        return {s: n for s, n in counts.items() if n}
