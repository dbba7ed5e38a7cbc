"""Read what a sweep or a single run left on disk into the typed records the reports render.

Nothing is re-run and nothing is written here. Inputs:

- a sweep directory: `sweep.json` (mode, settings, the task list with each task's status and
  sub-directory, totals) and, per task, an `opro optimize` run directory or, in evaluate
  mode, the `report.json` of `opro evaluate --out`;
- a single run directory (`config.json`, `steps.jsonl`, `results.json` once finished).

A task's accuracies are reported only from its finished result (`results.json`, or
`report.json` of a task marked done); an unfinished task shows its status, reason and
progress, never zeros. Every value read is checked (types, finite, in range); a file that is
missing where it must exist, or malformed, is a `ReportError` naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from opro.engine.spend import Spend
from opro.optimize.problem import THINK_STEP_BY_STEP
from opro.optimize.runlog import CONFIG, RESULTS, STEPS, RunDirError, read_steps
from opro.sweep.model import (
    TASK_STATUSES,
    Acc,
    Column,
    Report,
    ReportError,
    ShownInstruction,
    TaskReport,
    Totals,
)
from opro.sweep.values import amount, count, dig, fraction, load_json, obj, spend_of, string

SWEEP = "sweep.json"
EVAL_REPORT = "report.json"
LEDGER = "spend.json"
SWEEP_VERSION = 1

# The columns of an optimize report: the found instruction and the paper's two baselines.
FOUND = Column("found", "found", None, baseline=False)
EMPTY = Column("empty", "empty", "", baseline=True)
STEP_BY_STEP = Column("step", "step by step", THINK_STEP_BY_STEP, baseline=True)


# --- one optimize run directory -------------------------------------------------------------


def _acc_by_split(row: Mapping[str, Any], path: Path, where: str) -> dict[str, Acc]:
    """Both accuracies of one final-table row, per split that was scored."""
    strict, reference = row.get("accuracy"), row.get("accuracy_reference")
    out: dict[str, Acc] = {}
    for split in ("train", "validation", "test"):
        if isinstance(strict, dict) or isinstance(reference, dict):
            s = fraction(dig(strict, split), path, f"{where} strict {split} accuracy")
            r = fraction(dig(reference, split), path, f"{where} reference {split} accuracy")
        else:  # a run logged before both accuracies were kept: its own score only
            s, r = fraction(row.get(split), path, f"{where} {split} accuracy"), None
        if s is not None or r is not None:
            out[split] = Acc(s, r)
    return out


def _final_rows(results: Mapping[str, Any], path: Path) -> list[ShownInstruction]:
    final = results.get("final")
    if not isinstance(final, list):
        raise ReportError(f"{path}: no final table (the 'final' list)")
    rows = []
    for i, row in enumerate(final):
        row = obj(row, path, f"final row {i}")
        where = f"final row {i}"
        rows.append(
            ShownInstruction(
                role=string(row.get("role"), path, f"{where} role"),
                text=string(row.get("solution"), path, f"{where} solution"),
                scores=_acc_by_split(row, path, where),
            )
        )
    return rows


def _points(records: list[dict[str, Any]], path: Path) -> list[tuple[int, float]]:
    """(step, score) of every candidate a step scored, by the accuracy the run optimized."""
    points = []
    for record in records:
        for entry in record["candidates"]:
            if entry["status"] in ("start", "new") and entry.get("score") is not None:
                score = fraction(entry["score"], path, f"a score of step {record['step']}")
                points.append((int(record["step"]), float(score or 0.0)))
    return points


def _best_so_far(records: list[dict[str, Any]], path: Path) -> list[ShownInstruction]:
    """The three best instructions of an unfinished run, by their training score."""
    best: dict[str, tuple[float, Acc]] = {}
    for record in records:
        for entry in record["candidates"]:
            if entry["status"] in ("start", "new") and entry.get("score") is not None:
                where = f"a candidate of step {record['step']}"
                acc = Acc(
                    fraction(entry.get("accuracy", entry["score"]), path, where),
                    fraction(entry.get("accuracy_reference"), path, where),
                )
                best.setdefault(entry["canonical"], (float(entry["score"]), acc))
    ranked = sorted(best.items(), key=lambda item: -item[1][0])[:3]
    return [
        ShownInstruction(f"best {i} so far", text, {"train": acc})
        for i, (text, (_, acc)) in enumerate(ranked, start=1)
    ]


def _run_cost(
    results: Mapping[str, Any] | None, directory: Path, records: list[Any]
) -> tuple[Spend | None, int | None]:
    """What the run paid and its cache hits: results.json's totals, else the ledger's settled
    spend (what finished calls were billed) and the logged steps' cache hits."""
    if results is not None:
        path = directory / RESULTS
        totals = obj(results.get("totals"), path, "totals")
        return spend_of(totals, path, "totals"), count(
            totals.get("cache_hits", 0), path, "totals.cache_hits"
        )
    hits = sum(int(r["totals"].get("cache_hits", 0)) for r in records) if records else None
    ledger = directory / LEDGER
    if not ledger.exists():
        return None, hits
    data = obj(load_json(ledger), ledger, "the spend ledger")
    return spend_of(data.get("settled"), ledger, "settled"), hits


def _steps(directory: Path) -> list[dict[str, Any]]:
    try:
        records, _ = read_steps(directory / STEPS)
    except RunDirError as exc:
        raise ReportError(str(exc)) from None
    except OSError as exc:
        raise ReportError(f"cannot read {directory / STEPS}: {exc.strerror}") from None
    return [dict(record) for record in records]


def _config(directory: Path) -> dict[str, Any] | None:
    """config.json of a run directory, or None before the run has written it."""
    path = directory / CONFIG
    if not path.exists():
        return None
    return obj(load_json(path), path, "the run config")


def _check_prompt_run(run: Any, path: Path) -> dict[str, Any]:
    checked = obj(run if run is not None else {}, path, "run")
    kind = dig(checked, "problem", "kind")
    if kind not in (None, "prompt"):
        raise ReportError(
            f"{path}: a {kind} run; reports cover prompt optimization runs and sweeps "
            "(see its summary.txt)"
        )
    return checked


def read_optimize_task(
    directory: Path,
    where: str,
    task: str,
    status: str,
    reason: str | None,
    *,
    finished: bool | None,
) -> TaskReport:
    """One task's report from its run directory (`where`: as sweep.json names it).
    `finished`: True when the sweep marks it done (results.json must then exist), None for a
    single run (done when results.json exists)."""
    results_path = directory / RESULTS
    results: dict[str, Any] | None = None
    if finished or results_path.exists():
        results = obj(load_json(results_path), results_path, "results")
    if results is None and not directory.is_dir():
        return TaskReport(task, where, status, reason)
    records = _steps(directory)
    config = _config(directory)
    if results is not None:
        run = _check_prompt_run(results.get("run"), results_path)
    else:
        run = _check_prompt_run(config.get("run") if config else None, directory / CONFIG)
    grading = dig(run, "options", "grading")
    cost, hits = _run_cost(results, directory, records)
    planned = dig(config, "run", "options", "steps")
    last = records[-1]["step"] if records else None
    progress = None
    if results is None:
        of = f" of {planned}" if isinstance(planned, int) else ""
        progress = "no step logged yet" if last is None else f"{last}{of} steps logged"
    report = TaskReport(
        task,
        where,
        status if finished is not None else ("done" if results is not None else "unfinished"),
        reason,
        progress=progress,
        grading=grading if grading in ("strict", "reference") else "strict",
        points=_points(records, directory / STEPS),
        last_step=last,
        cost=cost,
        cache_hits=hits,
        wall_s=amount(results.get("wall_s", 0.0), results_path, "wall_s") if results else None,
    )
    if results is None:
        report.shown = _best_so_far(records, directory / STEPS)
        return report
    rows = _final_rows(results, results_path)
    report.shown = rows
    found = next((r for r in rows if r.role == "top 1"), None)
    if found is None and isinstance(results.get("best"), dict):
        best = results["best"]["solution"]
        found = ShownInstruction("best", string(best, results_path, "best.solution"), {})
    if found is not None:
        report.cells[FOUND.key] = found.scores
        report.found = found.text
    for column in (EMPTY, STEP_BY_STEP):
        row = next((r for r in rows if r.text == column.text), None)
        if row is not None:
            report.cells[column.key] = row.scores
    if not rows:  # a run with no final table (--test-top 0): train accuracies of the steps
        report.cells.update(_train_only(records, found.text if found else None, directory / STEPS))
    return report


def _train_only(
    records: list[dict[str, Any]], found: str | None, path: Path
) -> dict[str, dict[str, Acc]]:
    by_text: dict[str, Acc] = {}
    for record in records:
        for entry in record["candidates"]:
            if entry["status"] in ("start", "new") and "accuracy" in entry:
                where = f"a candidate of step {record['step']}"
                by_text.setdefault(
                    entry["canonical"],
                    Acc(
                        fraction(entry["accuracy"], path, where),
                        fraction(entry.get("accuracy_reference"), path, where),
                    ),
                )
    cells = {}
    columns = ((FOUND.key, found), (EMPTY.key, EMPTY.text), (STEP_BY_STEP.key, STEP_BY_STEP.text))
    for key, text in columns:
        if text is not None and text in by_text:
            cells[key] = {"train": by_text[text]}
    return cells


# --- one evaluate report ---------------------------------------------------------------------


@dataclass(slots=True)
class _EvalTask:
    report: TaskReport
    instructions: list[tuple[str, Acc]] = field(default_factory=list)


def read_evaluate_task(
    directory: Path, where: str, task: str, status: str, reason: str | None, split: str
) -> _EvalTask:
    path = directory / EVAL_REPORT
    if status != "done" and not path.exists():
        return _EvalTask(TaskReport(task, where, status, reason))
    data = obj(load_json(path), path, "the evaluation report")
    items = data.get("instructions")
    if not isinstance(items, list):
        raise ReportError(f"{path}: no 'instructions' list")
    totals = obj(data.get("totals"), path, "totals")
    grading = data.get("grading", "strict")
    out = _EvalTask(
        TaskReport(
            task,
            where,
            status,
            reason,
            grading=grading if grading in ("strict", "reference") else "strict",
            cost=spend_of(totals, path, "totals"),
            cache_hits=count(totals.get("cache_hits", 0), path, "totals.cache_hits"),
            n429=count(totals.get("n429", 0), path, "totals.n429"),
            wall_s=amount(totals.get("wall_s", 0.0), path, "totals.wall_s"),
        )
    )
    skipped = count(totals.get("skipped", 0), path, "totals.skipped")
    if data.get("stopped") or skipped:
        out.report.progress = f"stopped by the {data.get('stopped') or 'budget'}: {skipped} skipped"
    for i, item in enumerate(items):
        item = obj(item, path, f"instruction {i}")
        text = string(item.get("instruction"), path, f"instruction {i}")
        text = "" if not text.strip() else text  # every blank instruction is the empty one
        acc = Acc(
            fraction(item.get("accuracy"), path, f"instruction {i} accuracy"),
            fraction(item.get("accuracy_reference"), path, f"instruction {i} reference"),
        )
        if all(t != text for t, _ in out.instructions):
            out.instructions.append((text, acc))
    return out


def _evaluate_columns(tasks: list[_EvalTask], split: str) -> list[Column]:
    """One column per distinct instruction, in order of first appearance; the empty one and
    "Let's think step by step." are the baselines."""
    columns: dict[str, Column] = {}
    for t in tasks:
        for text, _ in t.instructions:
            if text in columns:
                continue
            if text == EMPTY.text or text == STEP_BY_STEP.text:
                base = EMPTY if text == EMPTY.text else STEP_BY_STEP
                columns[text] = base
            else:
                n = sum(not c.baseline for c in columns.values()) + 1
                columns[text] = Column(f"i{n}", f"#{n}", text, baseline=False)
    for t in tasks:
        for text, acc in t.instructions:
            t.report.cells[columns[text].key] = {split: acc}
        ranked = sorted(t.instructions, key=lambda item: -(item[1].by(t.report.grading) or -1.0))
        t.report.shown = [
            ShownInstruction(columns[text].label, text, {split: acc}) for text, acc in ranked
        ]
    ordered = [c for c in columns.values() if not c.baseline]
    return ordered + [c for c in (EMPTY, STEP_BY_STEP) if c in columns.values()]


# --- the whole directory ---------------------------------------------------------------------


def _task_dir(root: Path, name: Any, path: Path, i: int) -> Path:
    """A task's sub-directory, which must stay inside the sweep directory."""
    if not isinstance(name, str) or not name:
        raise ReportError(f"{path}: task {i} has no 'dir'")
    parts = PurePosixPath(name).parts
    if PurePosixPath(name).is_absolute() or "\\" in name or ".." in parts:
        raise ReportError(f"{path}: task {i} dir {name!r} is not a sub-directory of the sweep")
    return root.joinpath(*parts)


def _sweep_totals(data: Mapping[str, Any], path: Path) -> Totals | None:
    raw = data.get("totals")
    if raw is None:
        return None
    raw = obj(raw, path, "totals")
    paid = spend_of(raw, path, "totals")
    return Totals(
        spend=paid,
        cache_hits=count(raw.get("cache_hits", 0), path, "totals.cache_hits"),
        n429=count(raw.get("n429", 0), path, "totals.n429"),
        wall_s=amount(raw.get("wall_s", 0.0), path, "totals.wall_s"),
        source=SWEEP,
    )


def read_sweep(root: Path) -> Report:
    path = root / SWEEP
    data = obj(load_json(path), path, "the sweep file")
    if data.get("version") != SWEEP_VERSION:
        raise ReportError(f"{path}: version {data.get('version')!r}, expected {SWEEP_VERSION}")
    mode: Literal["optimize", "evaluate"]
    if data.get("mode") == "optimize":
        mode = "optimize"
    elif data.get("mode") == "evaluate":
        mode = "evaluate"
    else:
        raise ReportError(f"{path}: mode {data.get('mode')!r}, expected optimize or evaluate")
    settings = obj(data.get("settings", {}), path, "settings")
    entries = data.get("tasks")
    if not isinstance(entries, list):
        raise ReportError(f"{path}: no 'tasks' list")
    given = settings.get("split")
    split = given if isinstance(given, str) else "eval"
    optimize_tasks: list[TaskReport] = []
    eval_tasks: list[_EvalTask] = []
    for i, entry in enumerate(entries):
        entry = obj(entry, path, f"task {i}")
        name = string(entry.get("task"), path, f"task {i} name")
        status = entry.get("status")
        if status not in TASK_STATUSES:
            raise ReportError(f"{path}: task {name} has status {status!r}")
        reason = entry.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ReportError(f"{path}: task {name} has a reason that is not a string")
        directory = _task_dir(root, entry.get("dir"), path, i)
        where = str(entry["dir"])
        if mode == "optimize":
            done = status == "done"
            optimize_tasks.append(
                read_optimize_task(directory, where, name, status, reason, finished=done)
            )
        else:
            eval_tasks.append(read_evaluate_task(directory, where, name, status, reason, split))
    if mode == "optimize":
        tasks, columns, splits = optimize_tasks, [FOUND, EMPTY, STEP_BY_STEP], ["train", "test"]
    else:
        tasks = [t.report for t in eval_tasks]
        columns, splits = _evaluate_columns(eval_tasks, split), [split]
    tasks.sort(key=lambda t: t.task)
    return Report(
        kind="sweep",
        mode=mode,
        directory=root,
        settings=settings,
        columns=columns,
        splits=splits,
        tasks=tasks,
        totals=_sweep_totals(data, path) or Totals.sum_of(tasks),
    )


def read_run(root: Path) -> Report:
    config_path = root / CONFIG
    config = obj(load_json(config_path), config_path, "the run config")
    run = _check_prompt_run(config.get("run"), config_path)
    task_name = dig(run, "problem", "task")
    name = task_name if isinstance(task_name, str) else root.name
    task = read_optimize_task(root, ".", name, "unfinished", None, finished=None)
    settings = {
        "scorer": dig(run, "problem", "scorer", "spec"),
        "optimizer": dig(run, "optimizer", "spec"),
        "steps": dig(run, "options", "steps"),
        "grading": dig(run, "options", "grading"),
        "protocol": dig(run, "options", "protocol"),
    }
    totals = Totals.sum_of([task])
    return Report(
        kind="run",
        mode="optimize",
        directory=root,
        settings={k: v for k, v in settings.items() if v is not None},
        columns=[FOUND, EMPTY, STEP_BY_STEP],
        splits=["train", "test"],
        tasks=[task],
        totals=totals,
    )


def read_report(directory: Path) -> Report:
    """A sweep directory (it has sweep.json) or a single run directory (config.json)."""
    if not directory.is_dir():
        raise ReportError(f"{directory} is not a directory")
    if (directory / SWEEP).exists():
        return read_sweep(directory)
    if (directory / CONFIG).exists():
        return read_run(directory)
    raise ReportError(f"{directory} holds neither a sweep ({SWEEP}) nor an optimize run ({CONFIG})")
