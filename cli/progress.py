"""Live progress for `opro evaluate` and `opro optimize`: one line per running task.

Data enters only through the library's callbacks, so the library prints nothing itself:
`TaskProgress.on_progress` gets the fan-out's `Progress` snapshots (pairs done of total,
calls, cache hits, errors, 429s), `on_phase` the loop's `StepPhase` events (optimizer call,
scoring, validation, final table) and `on_step` its `StepInfo` after every step. Tokens, cost
and the budget left are read from the engine's `Budget`, which every paid call settles into.

A `Board` holds the tasks and shows them through a renderer: on a terminal a rich `Live`
display redrawn in place (`LiveRenderer`), elsewhere plain lines, never carriage returns
(`PlainRenderer`: at every 10% of an evaluation of at least `MILESTONE_MIN_PAIRS` pairs, at
most one every `PLAIN_MIN_GAP_S`, and every `PLAIN_INTERVAL_S` while something runs). With
more than one task (a sweep) the board shows one line per task and a totals line. The plan
line (`cli/runplan.py`) is printed once the scorer's speed is known: at once from
`--rpm`/`--tpm`, else measured over its first calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TextIO

from opro.cli.runplan import LONG_RUN_S, RunPlan, duration, plan_line
from opro.engine.budget import Budget
from opro.engine.evaluate import Progress
from opro.optimize.loop import StepInfo, StepPhase

Clock = Callable[[], float]
PLAIN_INTERVAL_S = 10.0
PLAIN_MIN_GAP_S = 2.0  # milestones closer than this are not worth a line each
MILESTONE_MIN_PAIRS = 50  # smaller evaluations finish too soon for 10% lines to help
# A speed is trusted after this many calls past the first one (which may load a model), or
# after MEASURE_MIN_CALLS of them once MEASURE_S have passed (a slow local model).
MEASURE_CALLS = 8
MEASURE_MIN_CALLS = 2
MEASURE_S = 10.0
RATE_WINDOW_S = 30.0
_PHASE_NAMES = {
    "optimizer": "optimizer call",
    "scoring": "scoring",
    "validation": "validation",
    "final": "final table",
}


class RateMeter:
    """Events per second over the last `window` seconds of a cumulative count (one
    evaluation's: the time between evaluations, an optimizer call, is not counted)."""

    def __init__(self, window: float = RATE_WINDOW_S) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, total: int) -> None:
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[1][0] > self.window:
            self._samples.popleft()

    def rate(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        if t1 <= t0 or c1 <= c0:
            return None
        return (c1 - c0) / (t1 - t0)


class TaskProgress:
    """The state of one running task (an evaluation or an optimize run) and its line."""

    def __init__(self, board: Board, label: str) -> None:
        self.board = board
        self.label = label
        self.snapshot: Progress | None = None
        self.step: int | None = None
        self.steps: int | None = None
        self.phase: str | None = None
        self.phase_started = board.now()
        self.step_started: float | None = None
        self.step_seconds: list[float] = []  # durations of finished optimize steps (>= 1)
        self.finished = False
        self._base_calls = 0  # calls of the evaluations before the current one
        self._pairs = RateMeter()
        self._calls = RateMeter()
        self._plan: RunPlan | None = None  # a plan line waiting for the scorer's speed
        self._plan_speed: float | None = None
        self._first_call: tuple[float, int] | None = None
        self._next_tenth = 1  # the next tenth of the evaluation that earns a plain line
        self._to_make = 0  # pairs of the evaluation that were not cached

    # ------------------------------------------------------------ library callbacks

    def on_progress(self, p: Progress) -> None:
        now = self.board.now()
        last = self.snapshot
        if last is not None and _new_evaluation(last, p):
            self._close_evaluation()
            last = None
        tenth = 10 * p.done // p.total if p.total else 10
        milestone = False
        if last is None:  # the first snapshot holds the cache hits, found before any call
            if self._plan is not None and self._plan.cached_at_start:
                self._plan = self._plan.with_cached(p.done)
                if self._plan_speed is not None:
                    self._show_plan(self._plan, self._plan_speed, measured=False)
                    self._plan = None
            self._next_tenth = tenth + 1
            self._to_make = p.total - p.done
        elif tenth >= self._next_tenth:
            self._next_tenth = tenth + 1
            milestone = self._to_make >= MILESTONE_MIN_PAIRS
        self.snapshot = p
        self._pairs.add(now, p.done)
        self._calls.add(now, p.calls)
        self._measure(now, self._base_calls + p.calls)
        self.board.changed(milestone)

    def _close_evaluation(self) -> None:
        """The current evaluation is over: its counts move to the totals, its rates reset."""
        if self.snapshot is not None:
            self._base_calls += self.snapshot.calls
        self.snapshot = None
        self._pairs = RateMeter()
        self._calls = RateMeter()

    def on_phase(self, event: StepPhase) -> None:
        now = self.board.now()
        self._close_evaluation()
        if event.step != self.step:
            self.step_started = now
        self.step, self.steps = event.step, event.steps
        self.phase = _PHASE_NAMES.get(event.phase, event.phase)
        self.phase_started = now
        self.board.changed(False)

    def on_step(self, info: StepInfo) -> None:
        now = self.board.now()
        if info.step >= 1 and self.step_started is not None:
            self.step_seconds.append(now - self.step_started)
        self.step, self.steps = info.step, info.steps
        self.phase = None
        line = step_line(info)
        self.board.log(f"{self.label}: {line}" if self.label else line)

    # ------------------------------------------------------------ plan line

    def announce(self, plan: RunPlan, speed: float | None) -> None:
        """Print the plan line now if `speed` (from limits) is known, else once measured."""
        if plan.cached_at_start:
            self._plan, self._plan_speed = plan, speed  # completed by the first snapshot
        elif plan.calls == 0:
            return
        elif speed is not None:
            self._show_plan(plan, speed, measured=False)
        else:
            self._plan = plan

    def _measure(self, now: float, calls: int) -> None:
        if self._plan is None or calls == 0:
            return
        if self._first_call is None:  # the first call may include loading a model: skip it
            self._first_call = (now, calls)
            return
        t0, c0 = self._first_call
        measured = calls - c0
        enough = measured >= MEASURE_CALLS or (
            measured >= MEASURE_MIN_CALLS and now - t0 >= MEASURE_S
        )
        if enough and now > t0:
            plan, self._plan = self._plan, None
            self._show_plan(plan, (calls - c0) / (now - t0), measured=True)

    def _show_plan(self, plan: RunPlan, speed: float, *, measured: bool) -> None:
        if plan.calls and speed > 0 and plan.calls / speed >= LONG_RUN_S:
            self.board.log(plan_line(plan, speed, measured=measured))

    # ------------------------------------------------------------ display

    def eta_step(self) -> float | None:
        p, rate = self.snapshot, self._pairs.rate()
        if p is None or rate is None or p.done >= p.total:
            return None
        return (p.total - p.done) / rate

    def eta_run(self) -> float | None:
        """The rest of an optimize run, from the mean step so far (the final table unknown)."""
        if self.step is None or self.steps is None or not self.step_seconds:
            return None
        if self.phase == _PHASE_NAMES["final"]:
            return None
        mean = sum(self.step_seconds) / len(self.step_seconds)
        elapsed = self.board.now() - (self.step_started or self.board.now())
        return max(0.0, mean - elapsed) + max(0, self.steps - self.step) * mean

    def line(self) -> str:
        """The task's status: step and phase, pairs, speed, cache hits, errors, ETAs."""
        parts: list[str] = []
        head = self.label
        if self.step is not None and self.steps is not None:
            head = f"{head} step {self.step}/{self.steps}".strip()
        if self.phase is not None:
            head += f" {self.phase}"
        p = self.snapshot
        if self.phase == _PHASE_NAMES["optimizer"]:
            head += f" running {duration(self.board.now() - self.phase_started)}"
        elif p is not None:
            head = f"{head} {p.done:,}/{p.total:,} pairs".strip()
            rate = self._calls.rate()
            parts.append(f"{rate:.2f} calls/s" if rate is not None else "- calls/s")
            parts.append(f"cache hits {p.cache_hits:,}")
            parts.append(f"errors {p.errors:,}")
            parts.append(f"429s {p.n429:,}")
        parts.insert(0, head)
        if not self.board.several:
            parts += self.board.spend_parts()
        etas = []
        if (step_eta := self.eta_step()) is not None:
            in_step = self.steps is not None and self.phase != _PHASE_NAMES["final"]
            etas.append(("step " if in_step else "") + duration(step_eta))
        if (run_eta := self.eta_run()) is not None:
            etas.append(f"run {duration(run_eta)}")
        if etas:
            parts.append("ETA " + ", ".join(etas))
        return " | ".join(parts)


def _new_evaluation(last: Progress, p: Progress) -> bool:
    """Whether `p` starts another evaluation (the loop scores step after step)."""
    return (
        p.total != last.total
        or p.done < last.done
        or p.calls < last.calls
        or last.done >= last.total
    )


def step_line(info: StepInfo) -> str:
    """The line after every optimize step (kept as it was: scripts read it)."""
    t = info.totals
    best = f"{100 * info.best.score:.1f}%" if info.best is not None else "-"
    spend: Any = info.record.get("spend")  # the ledger's run totals, all sessions
    calls = spend["calls"] if spend else t.calls
    cost = spend["cost_usd"] if spend else t.cost_usd
    return (
        f"step {info.step}/{info.steps}  best train {best}  calls {calls}  "
        f"cache hits {t.cache_hits}  cost ${cost:.4f}  errors {t.errors}"
    )


class Renderer(Protocol):
    def start(self, board: Board) -> None: ...
    def log(self, line: str) -> None: ...
    def update(self, board: Board, milestone: bool) -> None: ...
    def stop(self, board: Board) -> None: ...


class Board:
    """Every running task's progress and the engine's spend, shown by one renderer."""

    def __init__(
        self, budget: Budget | None, renderer: Renderer, *, clock: Clock = time.monotonic
    ) -> None:
        self.budget = budget
        self.renderer = renderer
        self.now = clock
        self.tasks: dict[str, TaskProgress] = {}

    @property
    def several(self) -> bool:
        return len(self.tasks) > 1

    def task(self, label: str = "") -> TaskProgress:
        found = self.tasks.get(label)
        if found is None:
            found = self.tasks[label] = TaskProgress(self, label)
        return found

    def finish(self, task: TaskProgress) -> None:
        """A task is done: its line leaves the display."""
        task.finished = True
        self.tasks.pop(task.label, None)
        self.changed(False)

    def spend_parts(self) -> list[str]:
        """Tokens and cost so far, and the budget left (the engine's, all tasks)."""
        b = self.budget
        if b is None:
            return []
        parts = [f"tokens {b.spent_tokens:,}", f"cost ${b.spent_usd:.4f}"]
        left = []
        if b.max_usd is not None:
            left.append(f"${max(0.0, b.max_usd - b.spent_usd):.4f}")
        if b.max_tokens is not None:
            left.append(f"{max(0, b.max_tokens - b.spent_tokens):,} tokens")
        if left:
            parts.append("budget left " + ", ".join(left))
        return parts

    def lines(self) -> list[str]:
        """What the display shows: a line per task, and with several a totals line."""
        shown = [t.line() for t in self.tasks.values() if not t.finished]
        if self.several:
            shown.append(" | ".join([f"total: {len(self.tasks)} running", *self.spend_parts()]))
        return shown

    def log(self, line: str) -> None:
        self.renderer.log(line)

    def changed(self, milestone: bool) -> None:
        self.renderer.update(self, milestone)

    def tick(self) -> None:
        self.renderer.update(self, False)

    @contextlib.asynccontextmanager
    async def showing(self, tick_s: float = 1.0) -> AsyncIterator[Board]:
        """Show the board while the block runs, redrawn or re-printed every `tick_s`."""
        self.renderer.start(self)

        async def ticker() -> None:
            while True:
                await asyncio.sleep(tick_s)
                self.tick()

        task = asyncio.create_task(ticker())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.renderer.stop(self)


class PlainRenderer:
    """Whole lines for logs and pipes: on milestones (at most one every `min_gap` seconds)
    and every `interval` seconds."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interval: float = PLAIN_INTERVAL_S,
        min_gap: float = PLAIN_MIN_GAP_S,
    ) -> None:
        self.stream = stream
        self.interval = interval
        self.min_gap = min_gap
        self._last: float | None = None

    def start(self, board: Board) -> None:
        self._last = board.now()

    def log(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def update(self, board: Board, milestone: bool) -> None:
        now = board.now()
        if self._last is None or not board.tasks:
            return
        waited = now - self._last
        if (milestone and waited >= self.min_gap) or waited >= self.interval:
            self._last = now
            for line in board.lines():
                self.log("  " + line)

    def stop(self, board: Board) -> None:
        self._last = None


class LiveRenderer:
    """A rich `Live` display on a terminal, redrawn at most 4 times a second."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console

        self.console = Console(file=stream, highlight=False)
        self._live: Any = None
        self._drawn = 0.0

    def start(self, board: Board) -> None:
        from rich.live import Live

        self._live = Live(
            self._renderable(board),
            console=self.console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    def _renderable(self, board: Board) -> Any:
        from rich.text import Text

        return Text("\n".join(board.lines()), no_wrap=True, overflow="ellipsis")

    def log(self, line: str) -> None:
        if self._live is not None:
            self._live.console.print(line, markup=False, highlight=False)
        else:
            self.console.print(line, markup=False, highlight=False)

    def update(self, board: Board, milestone: bool) -> None:
        if self._live is None:
            return
        now = board.now()
        if milestone or now - self._drawn >= 0.25:
            self._drawn = now
            self._live.update(self._renderable(board), refresh=True)

    def stop(self, board: Board) -> None:
        if self._live is not None:
            self._live.update(self._renderable(board), refresh=True)
            self._live.stop()
            self._live = None


def renderer_for(stream: TextIO | None = None) -> Renderer:
    """Live redraws on a terminal, plain lines otherwise (a pipe, a file, CI logs)."""
    stream = stream or sys.stderr
    if stream.isatty():
        return LiveRenderer(stream)
    return PlainRenderer(stream)
