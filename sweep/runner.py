"""One session of a sweep: the tasks' queue, the workers, sweep.json and the events.

`SweepRunner` is what `sweep.run.sweep` drives once the sweep directory and its record are
settled: `prepare` loads every unfinished task and builds the models (the only calls of
`Engine.model` are in `build_model`), `run` lets `max_parallel_tasks` workers take the
tasks, largest first, each task a limiter flow of its own, and `result` says how each ended.
State changes are written to sweep.json (from a worker thread while tasks run) and reported
as `SweepEvent`s.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from opro.engine.batch import BatchRunner
from opro.engine.batch_evaluate import pending_requests
from opro.engine.budget import BudgetExceeded
from opro.engine.engine import Engine
from opro.engine.evaluate import EvalReport, EvaluationAborted, Progress
from opro.engine.ledger import recording, stop_message
from opro.engine.limits import ConnectionRateLimited, LimitConfig
from opro.engine.model import Decoding, Generation, Model, ModelCallError, Price
from opro.errors import OproError
from opro.optimize.loop import OptimizationResult, OptimizeConfig, StepInfo, optimize
from opro.optimize.problem import PromptProblem
from opro.optimize.protocol import default_scorer_max_tokens
from opro.optimize.runlog import CONFIG
from opro.providers.errors import BadRequestError, FatalError
from opro.sweep.events import (
    SweepEvent,
    SweepProgress,
    TaskFinished,
    TaskLive,
    TaskStarted,
    TaskStep,
)
from opro.sweep.settings import Mode, ModelSettings, SweepSettings
from opro.sweep.state import (
    RecordWriter,
    SweepRecord,
    SweepTotals,
    TaskEntry,
    TaskStatus,
    now_iso,
    write_record,
)
from opro.tasks.datasets import Task, load_task
from opro.tasks.prompts import needs_qa_framing
from opro.tasks.splits import Split, split
from opro.tasks.types import Example

OPTIMIZER_MAX_TOKENS = 512  # the optimizer's default answer length, as `opro optimize`'s
REPORT = "report.json"  # an evaluate-mode task's report, as `opro evaluate --out` writes it


@dataclass(slots=True)
class TaskOutcome:
    """One task at the end of this session. `result` / `report` are set for a task that
    finished in this session (a task finished earlier is read back from its directory)."""

    task: str
    dir: Path
    status: TaskStatus
    reason: str | None
    result: OptimizationResult | None = None
    report: EvalReport | None = None


@dataclass(slots=True)
class SweepResult:
    directory: Path
    mode: Mode
    tasks: list[TaskOutcome]
    totals: SweepTotals
    # Why no new task was started: "budget", "rate limit" (the server asked for a longer pause
    # than the engine waits) or "error" (a failure every task would meet: key, quota, model).
    # Unfinished tasks remain resumable.
    stopped: str | None = None

    @property
    def complete(self) -> bool:
        return all(t.status == "done" for t in self.tasks)


def build_model(
    engine: Engine, settings: ModelSettings, *, max_tokens: int, priority: int
) -> Model:
    """The sweep's one call of `Engine.model`: a role's model with its resolved max tokens."""
    return engine.model(
        settings.spec,
        limits=LimitConfig(
            max_concurrency=settings.max_concurrency, rpm=settings.rpm, tpm=settings.tpm
        ),
        decoding=Decoding(
            temperature=settings.temperature, max_tokens=max_tokens, stop=settings.stop
        ),
        base_url=settings.base_url,
        price=settings.price,
        priority=priority,
        api=settings.api,
    )


@dataclass(frozen=True, slots=True)
class _Prepared:
    task: Task
    examples: Split | Sequence[Example]  # the split (optimize) or the examples (evaluate)
    size: int  # the pairs one pass over it takes, to order the tasks (largest first)


class SweepRunner:
    """One session of a sweep: the queue, the workers, sweep.json and the events."""

    def __init__(
        self,
        engine: Engine,
        settings: SweepSettings,
        directory: Path,
        record: SweepRecord,
        on_event: Callable[[SweepEvent], None] | None,
        progress_every: float,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.directory = directory
        self.record = record
        self.on_event = on_event
        self.progress_every = progress_every
        self.prior = record.totals
        self.models: dict[tuple[str, int], Model] = {}
        self.prepared: dict[str, _Prepared] = {}
        self.live: dict[str, TaskLive] = {}
        self.outcomes: dict[str, TaskOutcome] = {}
        self.stopped: str | None = None
        self.writer: RecordWriter | None = None
        self.started = time.perf_counter()
        self.calls_before = 0
        # --batch, evaluate-only: the answers of the up-front batch, graded by each task.
        self.answered: dict[str, Generation | ModelCallError | BudgetExceeded] | None = None
        self.answered_price: Price | None = None

    # -- preparation -----------------------------------------------------------------------

    def prepare(self) -> None:
        """Load every unfinished task (a task whose data cannot be used fails here, alone)
        and build the models it needs (a model that cannot be built stops the sweep)."""
        failed: list[tuple[TaskEntry, str]] = []
        for entry in self.record.tasks:
            if entry.status == "done":
                continue
            try:
                task = load_task(entry.task, data_dir=self.settings.data_dir)
                self.prepared[entry.task] = self._prepare(task)
            except OproError as exc:
                failed.append((entry, _one_line(exc)))
                continue
            self._model("scorer", task)
            if self.settings.mode == "optimize":
                self._model("optimizer", task)
        for entry, reason in failed:  # recorded once every model could be built
            self._end(entry, "failed", reason)
        self._save()

    def _prepare(self, task: Task) -> _Prepared:
        p = self.settings.problem
        evaluate = self.settings.evaluate
        if evaluate is not None and evaluate.split == "all":
            examples: Sequence[Example] = task.examples
        else:
            data = split(
                task,
                train_fraction=p.train_fraction,
                validation_fraction=p.validation_fraction,
                seed=p.split_seed,
            )
            if evaluate is None:
                return _Prepared(task, data, len(data.train))
            examples = data.train if evaluate.split == "train" else data.test
        if p.test_limit is not None and evaluate is not None and evaluate.split != "train":
            examples = examples[: p.test_limit]
        return _Prepared(task, examples, len(examples))

    def _model(self, role: str, task: Task) -> Model:
        if role == "scorer":
            spec = self.settings.scorer
            max_tokens = spec.max_tokens or default_scorer_max_tokens(task.name)
        else:
            assert self.settings.optimizer is not None
            spec = self.settings.optimizer
            max_tokens = spec.max_tokens or OPTIMIZER_MAX_TOKENS
        key = (role, max_tokens)
        model = self.models.get(key)
        if model is None:
            priority = 1 if role == "scorer" else 0  # optimizer calls ahead of scorer calls
            model = build_model(self.engine, spec, max_tokens=max_tokens, priority=priority)
            self.models[key] = model
        return model

    # -- running -----------------------------------------------------------------------------

    def recording(self, *, resume: bool) -> AbstractAsyncContextManager[None]:
        """The budget recorded in the sweep directory (spend.json) while the sweep runs."""
        return recording(self.engine.budget, self.directory, resume=resume)

    async def run(self) -> None:
        self.started = time.perf_counter()
        self.calls_before = self.engine.budget.spent.calls
        todo = [e for e in self.record.tasks if e.task in self.prepared]
        todo.sort(key=lambda e: -self.prepared[e.task].size)  # stable: ties keep their order
        queue = deque(todo)
        self.emit_progress()
        if self.settings.batch is not None and self.settings.mode == "evaluate":
            await self._batch_all(todo)
        ticker = asyncio.create_task(self._tick())
        self.writer = RecordWriter(self.directory)
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.settings.max_parallel_tasks, len(queue))):
                    group.create_task(self._worker(queue))
        finally:
            ticker.cancel()
            writer, self.writer = self.writer, None
            try:
                await writer.flush()
            finally:
                writer.close()
                self._save()  # the final state, written here and now

    async def _batch_all(self, todo: list[TaskEntry]) -> None:
        """`--batch`: one batch (per scorer model) over every pending pair of every task, so
        the tasks then grade from the cache; its state lives in the sweep directory."""
        ev, p, batch = self.settings.evaluate, self.settings.problem, self.settings.batch
        assert ev is not None and batch is not None
        qa = needs_qa_framing(p.position) if p.qa_framing is None else p.qa_framing
        groups: dict[int, tuple[Model, list[tuple[list[str], Sequence[Example]]]]] = {}
        for entry in todo:
            prepared = self.prepared[entry.task]
            assert not isinstance(prepared.examples, Split)
            model = self._model("scorer", prepared.task)
            jobs = groups.setdefault(id(model), (model, []))[1]
            jobs.append((list(ev.instructions), prepared.examples))
        self.answered = {}
        for model, jobs in groups.values():
            await model.prepare()
            runner = BatchRunner(model, self.directory, batch, resume=True)
            pending = pending_requests(model, jobs, position=p.position, qa_framing=qa)
            outcome = await runner.run(pending)
            self.answered.update(outcome.answered)
            self.answered_price = runner.price

    async def _worker(self, queue: deque[TaskEntry]) -> None:
        while queue and self.stopped is None:
            await self._run_task(queue.popleft())

    async def _run_task(self, entry: TaskEntry) -> None:
        prepared = self.prepared[entry.task]
        task_dir = self.directory / entry.dir
        resumed = (task_dir / CONFIG).exists() or entry.started is not None
        entry.status, entry.reason, entry.finished = "running", None, None
        entry.started = entry.started or now_iso()
        self.live[entry.task] = TaskLive(entry.task, None, None, None, 0, 0)
        self._save()
        self._emit(TaskStarted(entry.task, entry.dir, resumed))
        self.emit_progress()
        outcome = self.outcomes.setdefault(
            entry.task, TaskOutcome(entry.task, task_dir, "running", None)
        )
        try:
            if self.settings.mode == "optimize":
                outcome.result = await self._optimize(entry, prepared, task_dir)
            else:
                outcome.report = await self._evaluate(entry, prepared, task_dir)
        except BudgetExceeded as exc:
            self.stopped = self.stopped or "budget"
            self._end(entry, "stopped", stop_message(self.engine.budget, exc))
        except ConnectionRateLimited as exc:
            self.stopped = self.stopped or "rate limit"
            self._end(entry, "stopped", _one_line(exc))
        except asyncio.CancelledError:
            self._end(entry, "stopped", "interrupted")
            raise
        except OproError as exc:
            if _every_task_would_fail(exc):  # a bad key, an exhausted quota, a wrong model
                self.stopped = self.stopped or "error"
            self._end(entry, "failed", _one_line(exc))
        except Exception as exc:  # a bug: recorded, then raised with its traceback
            self._end(entry, "failed", f"internal error: {type(exc).__name__}: {exc}")
            raise
        else:
            self._end(entry, "done", None)

    async def _optimize(self, entry: TaskEntry, prepared: _Prepared, task_dir: Path) -> Any:
        assert isinstance(prepared.examples, Split)
        p = self.settings.problem
        problem = PromptProblem(
            self.engine,
            self._model("scorer", prepared.task),
            prepared.task,
            data=prepared.examples,
            position=p.position,
            qa_framing=p.qa_framing,
            starting=p.starting,
            test_limit=p.test_limit,
            errors=p.errors,
            flow=entry.task,
        )
        if self.settings.batch is not None:
            problem.batch = (self.settings.batch, task_dir)
        return await optimize(
            problem,
            self._model("optimizer", prepared.task),
            self.settings.optimize or OptimizeConfig(),
            run_dir=task_dir,
            resume=(task_dir / CONFIG).exists(),
            info={"sweep": str(self.directory), "task": entry.task, "started": now_iso()},
            on_step=partial(self._step, entry.task),
            flow=entry.task,
        )

    async def _evaluate(self, entry: TaskEntry, prepared: _Prepared, task_dir: Path) -> Any:
        assert not isinstance(prepared.examples, Split)
        p, ev = self.settings.problem, self.settings.evaluate
        assert ev is not None
        report = await self.engine.evaluate(
            list(ev.instructions),
            prepared.examples,
            self._model("scorer", prepared.task),
            grading=ev.grading,
            position=p.position,
            qa_framing=needs_qa_framing(p.position) if p.qa_framing is None else p.qa_framing,
            on_progress=partial(self._pairs, entry.task),
            errors=p.errors,
            flow=entry.task,
            answered=self.answered,
            answered_price=self.answered_price,
        )
        if self.answered is not None and report.totals.skipped:
            report.stopped = "budget"  # pairs the budget kept out of the batch
        if report.stopped == "budget":
            raise BudgetExceeded(f"the budget ran out while evaluating {entry.task}")
        t = report.totals
        if t.pairs and t.errors == t.pairs:
            first = next((m for s in report.instructions for m in s.error_messages), "")
            raise EvaluationAborted(f"every pair failed; first error: {first}")
        data = {**report.to_dict(), "protocol": ev.protocol}  # as `opro evaluate --out`
        _atomic_write(task_dir / REPORT, orjson.dumps(data, option=orjson.OPT_INDENT_2))
        return report

    # -- state, events -----------------------------------------------------------------------

    def _end(self, entry: TaskEntry, status: TaskStatus, reason: str | None) -> None:
        entry.status, entry.reason, entry.finished = status, reason, now_iso()
        self.live.pop(entry.task, None)
        outcome = self.outcomes.setdefault(
            entry.task, TaskOutcome(entry.task, self.directory / entry.dir, status, reason)
        )
        outcome.status, outcome.reason = status, reason
        self._save()
        self._emit(TaskFinished(entry.task, status, reason))
        self.emit_progress()

    def _step(self, task: str, info: StepInfo) -> None:
        t = info.totals
        best = info.best.score if info.best is not None else None
        self.live[task] = TaskLive(task, info.step, info.steps, best, t.calls, t.cache_hits)
        self._emit(TaskStep(task, info.step, info.steps, best, t.calls, t.cache_hits, t.cost_usd))

    def _pairs(self, task: str, progress: Progress) -> None:
        live = self.live.get(task)
        if live is not None:
            self.live[task] = replace(
                live,
                calls=progress.calls,
                cache_hits=progress.cache_hits,
                pairs_done=progress.done,
                pairs_total=progress.total,
            )

    def totals(self) -> SweepTotals:
        """Over all sessions: calls, tokens and USD as the budget settled them (spend.json
        carries earlier sessions'), cache hits and 429s as the models counted them."""
        spent = self.engine.budget.spent
        models = self.models.values()
        return SweepTotals(
            calls=spent.calls,
            cache_hits=self.prior.cache_hits
            + sum(m.stats.cache_hits + m.stats.shared for m in models),
            n429=self.prior.n429 + sum(m.stats.n429 for m in models),
            tokens_in=spent.tokens_in,
            tokens_out=spent.tokens_out,
            cost_usd=spent.cost_usd,
            wall_s=round(self.prior.wall_s + time.perf_counter() - self.started, 3),
        )

    def _save(self) -> None:
        self.record.totals = self.totals()
        if self.writer is not None:
            self.writer.write(self.record)  # while tasks run: off the event loop
        else:
            write_record(self.directory, self.record)

    def _emit(self, event: SweepEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def emit_progress(self, *, final: bool = False) -> None:
        if self.on_event is None:
            return
        budget = self.engine.budget
        elapsed = max(1e-9, time.perf_counter() - self.started)
        left_usd = None if budget.max_usd is None else max(0.0, budget.max_usd - budget.spent_usd)
        left_tokens = (
            None if budget.max_tokens is None else max(0, budget.max_tokens - budget.spent_tokens)
        )
        self.on_event(
            SweepProgress(
                totals=self.totals(),
                running=tuple(self.live.values()),
                counts=dict(Counter(e.status for e in self.record.tasks)),
                budget_left_usd=left_usd,
                budget_left_tokens=left_tokens,
                rate_calls_per_s=(budget.spent.calls - self.calls_before) / elapsed,
                final=final,
            )
        )

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.progress_every)
            self.emit_progress()

    def result(self) -> SweepResult:
        outcomes = []
        for entry in self.record.tasks:
            outcome = self.outcomes.get(entry.task)
            if outcome is None:
                outcome = TaskOutcome(
                    entry.task, self.directory / entry.dir, entry.status, entry.reason
                )
            outcomes.append(outcome)
        return SweepResult(
            self.directory, self.settings.mode, outcomes, self.record.totals, self.stopped
        )


def _every_task_would_fail(exc: BaseException) -> bool:
    """Whether a task's failure is the connection's (key, quota, unknown model or endpoint),
    so starting the next task would only pay to fail the same way."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ModelCallError):
            error = seen.error
            if isinstance(error, BadRequestError):
                return error.status == 404
            return isinstance(error, FatalError)
        seen = seen.__cause__
    return False


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
