"""A run directory: the durable record of an optimization run, and what resume reads back.

Layout::

    config.json    {"format": 1, "run": {...}, "info": {...}}: "run" is everything that
                   changes results (problem, models, options); "info" is operational (limits,
                   cache, URLs without credentials) and may differ on resume. Never API keys.
    steps.jsonl    one JSON object per completed step (step 0 scores the starting solutions)
    results.json   the outcome: best solution, every scored solution, the final table
    summary.txt    the same for people

A step is appended with a single `os.write` of the whole line on an O_APPEND descriptor,
then fsync'd, so a crash leaves at most one torn line at the end. The loop does that, and
writes the final files, in a worker thread (`append_async`, `write_results_async`): an
fsync can take milliseconds, which the event loop (other runs of a sweep, calls in flight)
should not wait for; the loop awaits each write, so steps still land in order. Readers
ignore a last line that has no newline or is not valid JSON; `RunLog.resume` also cuts it
off, so the next append starts on a fresh line. results.json and summary.txt are replaced
atomically (write a temporary file, fsync, rename).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from opro.engine.spend import Spend
from opro.errors import OproError
from opro.optimize.records import RunTotals, StepRecord, as_step_record, step_record_problem

logger = logging.getLogger("opro.optimize")

FORMAT = 1
CONFIG = "config.json"
STEPS = "steps.jsonl"
RESULTS = "results.json"
SUMMARY = "summary.txt"


class RunDirError(OproError):
    """The run directory cannot be used as asked; the message says what to do instead."""


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a JSON object (config.json's keys)."""
    if isinstance(value, Mapping) and value:
        for key in sorted(value):
            yield from flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def config_differences(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    ignore: frozenset[str] = frozenset(),
    added: Mapping[str, Any] | None = None,
) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every setting that differs.

    `added` maps settings introduced after a run may have been made to the value that run
    behaved as; an old config without the key matches exactly that value.
    """
    a, b = dict(flatten(old)), dict(flatten(new))
    missing = object()
    diffs = []
    for key in sorted(a.keys() | b.keys()):
        if key in ignore:
            continue
        va, vb = a.get(key, missing), b.get(key, missing)
        if va is missing and added is not None and key in added and vb == added[key]:
            continue
        if va != vb:
            diffs.append((key, None if va is missing else va, None if vb is missing else vb))
    return diffs


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_steps(path: Path) -> tuple[list[StepRecord], int]:
    """The complete step records and the byte length they occupy (a torn tail excluded).

    Only the last line may be torn (the append protocol guarantees that); a bad line before
    it means the file was edited or damaged, which is an error rather than a silent skip.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    records: list[StepRecord] = []
    good = 0
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, start=1):
        last = number == len(lines)
        if last:
            break  # text after the final newline: empty, or a torn append
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            if number == len(lines) - 1 and not lines[-1]:
                break  # the last complete line was torn by a crash mid-write
            raise RunDirError(
                f"{path} line {number} is not valid JSON; the run log is damaged"
            ) from None
        problem = step_record_problem(record)
        if problem is not None:
            raise RunDirError(
                f"{path} line {number} is not a step record ({problem}); the run log is "
                "damaged: restore it from a backup, or start again in a new --run-dir"
            )
        records.append(as_step_record(record))
        good += len(line) + 1
    return records, good


class RunLog:
    """Appends step records to a run directory and writes its final files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.steps_path = directory / STEPS

    @classmethod
    def create(cls, directory: str | os.PathLike[str], config: Mapping[str, Any]) -> RunLog:
        """Start a new run; refuse a directory that already holds one."""
        path = Path(directory)
        if (path / CONFIG).exists() or (path / STEPS).exists():
            raise RunDirError(
                f"{path} already holds a run; pass --resume to continue it, "
                "or choose another --run-dir"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
            _atomic_write(path / CONFIG, _dump({"format": FORMAT, **config}))
        except OSError as exc:
            raise RunDirError(f"cannot write run directory {path}: {exc.strerror}") from exc
        return cls(path)

    @classmethod
    def resume(
        cls,
        directory: str | os.PathLike[str],
        run: Mapping[str, Any],
        *,
        ignore: frozenset[str] = frozenset(),
        added: Mapping[str, Any] | None = None,
    ) -> tuple[RunLog, list[StepRecord]]:
        """Reopen a run made with the same result-changing settings; return its steps."""
        path = Path(directory)
        try:
            stored = orjson.loads((path / CONFIG).read_bytes())
        except FileNotFoundError:
            raise RunDirError(f"nothing to resume: {path} has no {CONFIG}") from None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise RunDirError(f"cannot read {path / CONFIG}: {exc}") from None
        if not isinstance(stored, dict) or stored.get("format") != FORMAT:
            raise RunDirError(f"{path / CONFIG} is not a run config of format {FORMAT}")
        diffs = config_differences(
            stored.get("run", {}), _roundtrip(run), ignore=ignore, added=added
        )
        if diffs:
            key, was, now = diffs[0]
            more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
            raise RunDirError(
                f"cannot resume {path}: {key} was {was!r} there but is {now!r} now{more}; "
                "use the run's settings or a new --run-dir"
            )
        log = cls(path)
        records, good = read_steps(log.steps_path)
        for expected, record in enumerate(records):
            if record.get("step") != expected:
                raise RunDirError(
                    f"{log.steps_path} line {expected + 1}: step {expected} missing or out of "
                    "order; the run log is damaged: restore it, or start again in a new --run-dir"
                )
        if log.steps_path.exists() and log.steps_path.stat().st_size != good:
            logger.info("resume %s: dropping a torn last line of %s", path, STEPS)
            with open(log.steps_path, "r+b") as fh:  # drop the torn tail before appending
                fh.truncate(good)
                os.fsync(fh.fileno())
        _log_resume(path, records, run)
        return log, records

    def append(self, record: StepRecord) -> None:
        """Durably add one complete line (one write call, then fsync)."""
        data = orjson.dumps(record) + b"\n"
        fd = os.open(self.steps_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise RunDirError(f"short write to {self.steps_path} ({written}/{len(data)})")
            os.fsync(fd)
        finally:
            os.close(fd)

    async def append_async(self, record: StepRecord) -> None:
        """`append` in a worker thread, so the event loop does not wait for the fsync."""
        await asyncio.to_thread(self.append, record)
        logger.debug("step %s logged in %s", record.get("step"), self.steps_path)

    def write_results(self, results: Mapping[str, Any], summary: str) -> None:
        _atomic_write(self.directory / RESULTS, _dump(results))
        _atomic_write(self.directory / SUMMARY, summary.encode())

    async def write_results_async(self, results: Mapping[str, Any], summary: str) -> None:
        """`write_results` in a worker thread (two fsyncs and renames)."""
        await asyncio.to_thread(self.write_results, results, summary)


def _log_resume(path: Path, records: list[StepRecord], run: Mapping[str, Any]) -> None:
    """What resume replays and where the run goes on (paid work comes from the cache)."""
    options = run.get("options")
    steps = options.get("steps") if isinstance(options, Mapping) else None
    if not records:
        logger.info("resume %s: no step was completed; the run starts at step 0", path)
        return
    scored = sum(
        entry.get("status") in ("new", "start")
        for record in records
        for entry in record.get("candidates", [])
    )
    last = records[-1].get("step", len(records) - 1)
    logger.info(
        "resume %s: replaying steps 0-%s from %s (%d solutions scored, not paid again); "
        "the run goes on at step %s%s",
        path,
        last,
        STEPS,
        scored,
        last + 1 if isinstance(last, int) else "?",
        f" of {steps}" if isinstance(steps, int) else "",
    )


def _dump(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def _roundtrip(obj: Any) -> Any:
    """As it reads back from JSON (tuples become lists), so comparisons are like for like."""
    return orjson.loads(orjson.dumps(obj))


def _fmt(score: Any, percent: bool) -> str:
    if score is None:
        return "-"
    return f"{100 * score:.1f}%" if percent else f"{score:.6g}"


def _graded_table(final: list[Mapping[str, Any]], grading: str) -> list[str]:
    """The final table of a prompt run: strict and reference accuracy per split, side by side,
    and how many answers hit the token limit (train/valid/test)."""
    splits = ("train", "validation", "test")
    head = " ".join(f"{name:>15}" for name in ("train", "valid", "test"))
    lines = [
        "",
        f"accuracy strict / reference (optimized by {grading}); truncated: answers cut at the "
        "token limit, train/valid/test",
        f"{'':10} {head} {'truncated':>10}  solution",
    ]
    for row in final:
        strict, reference = row.get("accuracy") or {}, row.get("accuracy_reference") or {}
        cells = " ".join(
            f"{_fmt(strict.get(k), True) + ' / ' + _fmt(reference.get(k), True):>15}"
            for k in splits
        )
        cut = row.get("truncated") or {}
        trunc = "/".join("-" if cut.get(k) is None else str(cut[k]) for k in splits)
        lines.append(f"{row['role']:<10} {cells} {trunc:>10}  {row['solution']!r}")
    return lines


def _protocol_line(protocol: Any, results: Mapping[str, Any]) -> str:
    """Which protocol the numbers follow, and how many optimizer answers held no candidate."""
    what = {"paper": "the paper's reference settings", "ours": "our defaults"}.get(protocol, "")
    head = f"protocol: {protocol}" + (f" ({what})" if what else "")
    answers, failures = results.get("answers", 0), results.get("extraction_failures", 0)
    return f"{head}   extraction failures: {failures} of {answers} optimizer answers"


def render_summary(results: Mapping[str, Any]) -> str:
    """summary.txt: the run's settings, best solution, final table and costs, for people."""
    run = results.get("run", {})
    problem = run.get("problem", {})
    percent = problem.get("kind") == "prompt"
    scorer = problem.get("scorer", {})
    lines = [
        f"task: {problem.get('task', problem.get('kind', '?'))}"
        + (f"   scorer: {scorer.get('spec')}" if isinstance(scorer, Mapping) else "")
        + f"   optimizer: {run.get('optimizer', {}).get('spec', '?')}",
        f"steps completed: {results['steps_completed']}"
        f" of {run.get('options', {}).get('steps', '?')}"
        + ("   (stopped early: validation stopped improving)" if results["stopped_early"] else ""),
    ]
    best = results.get("best")
    if best:
        lines.append(f"best on train: {_fmt(best['score'], percent)} (step {best['step']})")
        for entry in results.get("solutions", []):
            if entry.get("solution") == best["solution"] and "accuracy" in entry:
                lines[-1] += (
                    f"; strict {_fmt(entry['accuracy'], True)}, reference "
                    f"{_fmt(entry['accuracy_reference'], True)}, truncated {entry['truncated']}"
                )
        lines.append(f"  {best['solution']!r}")
    if results["final"] and any(row.get("accuracy") for row in results["final"]):
        grading = run.get("options", {}).get("grading", "strict")
        lines += _graded_table(results["final"], grading)
    elif results["final"]:
        lines += ["", f"{'':10} {'train':>7} {'valid':>7} {'test':>7}  solution"]
        for row in results["final"]:
            cells = " ".join(f"{_fmt(row[k], percent):>7}" for k in ("train", "validation", "test"))
            lines.append(f"{row['role']:<10} {cells}  {row['solution']!r}")
    protocol = run.get("options", {}).get("protocol")
    if protocol is not None or "answers" in results:
        lines += ["", _protocol_line(protocol, results)]
    t = results["totals"]
    lines += [
        "",
        f"calls={t['calls']} cache_hits={t['cache_hits']} errors={t['errors']} "
        f"tokens={t['tokens_in']}+{t['tokens_out']} cost=${t['cost_usd']:.4f} "
        f"wall={results.get('wall_s', 0.0):.1f}s",
    ]
    return "\n".join(lines) + "\n"


def logged_spend(run_dir: Path) -> Spend:
    """The spend the step records of a run show (for runs logged before the ledger existed;
    a lower bound: it misses stopped steps)."""
    records, _ = read_steps(run_dir / STEPS)
    return sum((RunTotals.from_dict(r["totals"]).spend for r in records), Spend())
