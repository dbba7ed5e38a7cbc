"""`ablate`: one optimize run per (value, repeat) of an axis, all under one `Engine`.

Data enters as a `SweepSettings` naming one task (the base run: models, problem, optimize
options) and the axis with its values (`sweep.ablate.plan_arms`); it leaves as an ablation
directory and an `AblationResult`:

    ablation.json            the plan: axis, values, repeats, every arm's seeds and settings
    sweep.json, spend.json   the arms' state and the budget, as a sweep keeps them
    sharing.json             who paid for each result, requests saved by sharing
    arms/<axis>=<value>/rep<r>/   an ordinary `opro optimize` run directory per arm
    curves.png, table.md, table.csv, results.json, report.html   the comparison

The arms are a sweep's tasks: `runner.SweepRunner` runs them (at most `max_parallel_tasks`
at once, each a limiter flow of its own, failures isolated, live progress events) on one
limiter per connection, one cache, one single-flight table and one budget, recorded in the
ablation directory so a cap given on resume is the ablation's total. Each arm calls through
its own `ablate_share.ArmModel`, so a result another arm paid for is counted as saved.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from opro.engine.engine import Engine
from opro.engine.ledger import recording
from opro.engine.model import Model
from opro.optimize.loop import OptimizationResult, optimize
from opro.optimize.problem import PromptProblem
from opro.optimize.runlog import CONFIG
from opro.sweep.ablate import Arm, Value, check_axis, describe_plan, plan_arms
from opro.sweep.ablate_share import ArmCache, ArmModel, Sharing
from opro.sweep.events import SweepEvent
from opro.sweep.model import ReportError
from opro.sweep.runner import SweepResult, SweepRunner, TaskOutcome, _Prepared
from opro.sweep.settings import SweepSettings, reopens_finished, resume_differences
from opro.sweep.state import SweepError, SweepRecord, TaskEntry, now_iso, read_record
from opro.tasks.datasets import Task, load_task
from opro.tasks.splits import Split

log = logging.getLogger("opro.sweep")

PLAN = "ablation.json"
PLAN_VERSION = 1


@dataclass(slots=True)
class AblationResult:
    """How every arm ended in this session, the totals, and the requests sharing saved."""

    directory: Path
    axis: str
    arms: list[Arm]
    sweep: SweepResult
    saved: dict[str, int]  # requests served from results another arm paid, by role

    @property
    def outcomes(self) -> list[TaskOutcome]:
        return self.sweep.tasks

    @property
    def stopped(self) -> str | None:
        return self.sweep.stopped

    @property
    def complete(self) -> bool:
        return self.sweep.complete


class AblationRunner(SweepRunner):
    """A sweep whose tasks are the arms: one task's data, each arm's own settings and views."""

    def __init__(
        self,
        engine: Engine,
        settings: SweepSettings,
        directory: Path,
        record: SweepRecord,
        on_event: Callable[[SweepEvent], None] | None,
        progress_every: float,
        *,
        task: Task,
        arms: Sequence[Arm],
        sharing: Sharing,
    ) -> None:
        super().__init__(engine, settings, directory, record, on_event, progress_every)
        self.task = task
        self.arms = {a.name: a for a in arms}
        self.index = {a.name: i for i, a in enumerate(arms)}
        self.sharing = sharing

    def prepare(self) -> None:
        """Split the task once (every arm optimizes on the same split) and build the models."""
        prepared = self._prepare(self.task)
        for entry in self.record.tasks:
            if entry.status != "done":
                self.prepared[entry.task] = prepared
        self._model("scorer", self.task)
        self._model("optimizer", self.task)
        self._save()

    async def _arm_model(self, role: str, arm: Arm) -> Model:
        key = (f"{role}@{arm.name}", 0)
        view = self.models.get(key)
        if view is None:
            base = self._model(role, self.task)
            await base.prepare()  # the views share its provider and cache identity
            cache = ArmCache(base.cache, self.sharing, self.index[arm.name], role)
            seed = arm.optimizer_seed if role == "optimizer" else None
            view = self.models[key] = ArmModel(base, cache, seed=seed)
        return view

    async def _optimize(
        self, entry: TaskEntry, prepared: _Prepared, task_dir: Path
    ) -> OptimizationResult:
        assert isinstance(prepared.examples, Split)
        arm = self.arms[entry.task]
        p = self.settings.problem
        problem = PromptProblem(
            self.engine,
            await self._arm_model("scorer", arm),
            prepared.task,
            data=prepared.examples,
            position=p.position,
            qa_framing=p.qa_framing,
            starting=arm.starting if arm.starting is not None else p.starting,
            test_limit=p.test_limit,
            errors=p.errors,
            flow=entry.task,
        )
        return await optimize(
            problem,
            await self._arm_model("optimizer", arm),
            arm.config,
            run_dir=task_dir,
            resume=(task_dir / CONFIG).exists(),
            info={"ablation": str(self.directory), "arm": arm.name, "started": now_iso()},
            on_step=partial(self._step, entry.task),
            flow=entry.task,
        )


def _plan_record(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the plan a resume must keep (steps may grow, as in a sweep)."""
    return {
        "axis": settings["axis"],
        "values": settings["values"],
        "repeats": settings["repeats"],
        "total_candidates": settings["total_candidates"],
        "starting": {
            a["label"]: a["starting"] for a in settings["arms"] if a["starting"] is not None
        },
    }


def read_plan(directory: Path) -> dict[str, Any]:
    """ablation.json of `directory` (a `SweepError` naming it if absent or malformed)."""
    path = directory / PLAN
    try:
        data: Any = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise SweepError(f"{directory} holds no ablation ({PLAN})") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SweepError(f"cannot read {path}: {exc}") from None
    ok = (
        isinstance(data, dict)
        and data.get("version") == PLAN_VERSION
        and isinstance(data.get("axis"), str)
        and isinstance(data.get("values"), list)
        and isinstance(data.get("repeats"), int)
        and isinstance(data.get("arms"), list)
    )
    if not ok:
        raise SweepError(f"{path} is damaged; start the ablation again in a new --run-dir")
    return dict(data)


def _stored_values(plan: Mapping[str, Any]) -> list[Value] | list[str]:
    """The values of a stored plan: a start axis's instructions come from the plan itself."""
    if plan["axis"] != "start":
        return [str(v) for v in plan["values"]]
    found: dict[str, tuple[str, ...]] = {}
    for arm in plan["arms"]:
        if isinstance(arm, dict) and isinstance(arm.get("starting"), list):
            found.setdefault(str(arm["label"]), tuple(str(s) for s in arm["starting"]))
    return [Value(label, found[label]) for label in plan["values"] if label in found]


async def ablate(
    engine: Engine,
    settings: SweepSettings,
    axis: str | None = None,
    values: str | Sequence[object] | None = None,
    *,
    repeats: int | None = None,
    total_candidates: int | None = None,
    run_dir: str | os.PathLike[str],
    resume: bool = False,
    on_event: Callable[[SweepEvent], None] | None = None,
    progress_every: float = 5.0,
    info: Mapping[str, Any] | None = None,
) -> AblationResult:
    """Run every arm of `axis` x `values` x `repeats` on the one task `settings` names.

    `settings.optimize` is the base run's configuration; each arm changes one setting of it
    (see `sweep.ablate`). Use a fresh engine: its budget becomes the ablation's (recorded in
    `run_dir`). With `resume=True` the ablation in `run_dir` continues: axis, values and
    repeats default to the stored ones, and a change that would change results is refused
    before anything is sent. `info` is stored in sweep.json for reference (never keys).
    """
    if not (progress_every > 0):  # NaN fails too
        raise SweepError(f"progress_every must be > 0 seconds, got {progress_every!r}")
    directory = Path(run_dir)
    stored = read_plan(directory) if resume else None
    if stored is not None:
        axis = axis or stored["axis"]
        if values is None:
            values = _stored_values(stored)
        repeats = repeats or stored["repeats"]
        if total_candidates is None:
            total_candidates = stored.get("total_candidates")
    if axis is None or values is None:
        raise SweepError("an ablation needs an axis and its values")
    check_axis(axis)
    if len(settings.patterns) != 1 or settings.evaluate is not None:
        raise SweepError("an ablation optimizes one task: give exactly one --task")
    base = settings.optimize
    if base is None:
        raise SweepError("an ablation needs the optimize settings of its base run")
    repeats = repeats or 1
    arms = plan_arms(axis, values, base, repeats=repeats, total_candidates=total_candidates)
    total = total_candidates
    if total is None and axis in ("per-step", "one-shot"):
        total = base.steps * base.candidates_per_step
    plan = {"version": PLAN_VERSION, **describe_plan(axis, arms, repeats, total)}
    task = load_task(settings.patterns[0], data_dir=settings.data_dir)  # before any file
    budget = engine.budget
    described = {
        **settings.describe(),
        "budget": {"max_usd": budget.max_usd, "max_tokens": budget.max_tokens},
        "ablation": _plan_record(plan),
    }
    names = [a.name for a in arms]
    if stored is not None:
        record = read_record(directory)
        diffs = resume_differences(record.settings, described)
        if diffs:
            key, was, now = diffs[0]
            more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
            raise SweepError(
                f"cannot resume {directory}: {key} was {was!r} there but is {now!r} now{more}; "
                "use the ablation's settings or a new --run-dir"
            )
        if sorted(e.task for e in record.tasks) != sorted(names):
            raise SweepError(
                f"{directory}: sweep.json and {PLAN} name different arms; restore them, or "
                "start the ablation again in a new --run-dir"
            )
        if reopens_finished(record.settings, described):
            for entry in record.tasks:
                if entry.status == "done":
                    entry.status = "pending"
        record.settings, record.info = described, dict(info or {})
    else:
        _check_fresh(directory)
        entries = [TaskEntry(a.name, a.dir) for a in arms]
        record = SweepRecord("optimize", described, entries, info=dict(info or {}))
    _write_json(directory / PLAN, plan)  # steps may have grown on resume
    sharing = Sharing.load(directory, names)
    runner = AblationRunner(
        engine,
        settings,
        directory,
        record,
        on_event,
        progress_every,
        task=task,
        arms=arms,
        sharing=sharing,
    )
    runner.prepare()
    try:
        async with recording(budget, directory, resume=resume):
            await runner.run()
    finally:
        sharing.save(directory)
    result = runner.result()
    await write_comparison(directory)
    runner.emit_progress(final=True)
    saved = {"scorer": sharing.total("scorer"), "optimizer": sharing.total("optimizer")}
    return AblationResult(directory, axis, arms, result, saved)


async def write_comparison(directory: Path) -> None:
    """The comparison files; one that cannot be written is a warning (`opro report` retries)."""
    from opro.sweep.ablate_report import write_ablation_reports

    try:
        await asyncio.to_thread(write_ablation_reports, directory)
    except ReportError as exc:
        log.warning("no report for %s: %s (`opro report %s` retries)", directory, exc, directory)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise SweepError(f"cannot write {path}: {exc.strerror}") from None


def _check_fresh(directory: Path) -> None:
    if (directory / PLAN).exists() or (directory / "sweep.json").exists():
        raise SweepError(
            f"{directory} already holds an ablation or sweep; pass --resume to continue it, "
            "or choose another --run-dir"
        )
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise SweepError(f"{directory} is not an empty directory; choose another --run-dir")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepError(f"cannot create {directory}: {exc.strerror}") from None
