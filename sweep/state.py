"""`sweep.json`: the durable record of a sweep, rewritten atomically at every task state change.

Layout (version 1; the report builder reads these field names)::

    {"version": 1, "mode": "optimize" | "evaluate",
     "settings": {...},                       # SweepSettings.describe(): resolved, no keys
     "tasks": [{"task": "bbh/navigate", "dir": "bbh__navigate",
                "status": "pending" | "running" | "done" | "failed" | "stopped",
                "reason": null | "...", "started": iso | null, "finished": iso | null}],
     "totals": {"calls", "cache_hits", "n429", "tokens_in", "tokens_out", "cost_usd",
                "wall_s"},                    # over every session of the sweep
     "info": {...}}                           # operational, for reference (may change)

Each task's own files live in its `dir` under the sweep directory: an `opro optimize` run
directory (optimize mode) or `report.json` (evaluate mode). A file that is not a well-formed
sweep record stops a resume with one line naming it.
"""

from __future__ import annotations

import asyncio
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

import orjson

from opro.errors import OproError

VERSION = 1
SWEEP_FILE = "sweep.json"
TaskStatus = Literal["pending", "running", "done", "failed", "stopped"]
STATUSES: tuple[str, ...] = get_args(TaskStatus)


class SweepError(OproError):
    """The sweep directory cannot be used as asked; the message says what to do instead."""


def now_iso() -> str:
    """The local time with its UTC offset, to the second."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass(slots=True)
class TaskEntry:
    """One task of the sweep and where it stands."""

    task: str
    dir: str
    status: TaskStatus = "pending"
    reason: str | None = None
    started: str | None = None
    finished: str | None = None


@dataclass(frozen=True, slots=True)
class SweepTotals:
    """The sweep's totals over all its sessions (calls, tokens and USD as billed)."""

    calls: int = 0
    cache_hits: int = 0
    n429: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0


@dataclass(slots=True)
class SweepRecord:
    """What sweep.json holds."""

    mode: str
    settings: dict[str, Any]
    tasks: list[TaskEntry]
    totals: SweepTotals = field(default_factory=SweepTotals)
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        data = {
            "version": VERSION,
            "mode": self.mode,
            "settings": self.settings,
            "tasks": [asdict(t) for t in self.tasks],
            "totals": asdict(self.totals),
            "info": self.info,
        }
        return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"


def write_record(directory: Path, record: SweepRecord) -> None:
    """Replace sweep.json atomically (temporary file, fsync, rename, fsync the directory)."""
    _write_bytes(directory, record.to_json())


class RecordWriter:
    """Writes sweep.json from a worker thread, in the order asked (one thread), so a task's
    state change costs the event loop a JSON dump instead of two fsyncs (~10-20 ms here,
    during which no call could be sent). A failed write is raised by the next `write` or by
    `flush`; `flush` waits for every write asked for so far."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opro-sweep")
        self._pending: list[asyncio.Future[None]] = []

    def write(self, record: SweepRecord) -> None:
        for done in [f for f in self._pending if f.done()]:
            self._pending.remove(done)
            done.result()  # raises a failed write's SweepError
        loop = asyncio.get_running_loop()
        data = record.to_json()
        self._pending.append(
            loop.run_in_executor(self._executor, _write_bytes, self.directory, data)
        )

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        for result in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _write_bytes(directory: Path, data: bytes) -> None:
    path = directory / SWEEP_FILE
    tmp = directory / f".{SWEEP_FILE}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise SweepError(f"cannot write {path}: {exc.strerror}") from exc


def read_record(directory: Path) -> SweepRecord:
    """sweep.json of `directory`, checked field by field."""
    path = directory / SWEEP_FILE
    try:
        data: Any = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise SweepError(f"nothing to resume: {directory} has no {SWEEP_FILE}") from None
    except OSError as exc:
        raise SweepError(f"cannot read {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError:
        raise _damaged(path, "not valid JSON") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise _damaged(path, f"not a sweep record of version {VERSION}")
    mode, settings = data.get("mode"), data.get("settings")
    if mode not in ("optimize", "evaluate") or not isinstance(settings, dict):
        raise _damaged(path, "no mode or settings")
    raw_tasks = data.get("tasks")
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise _damaged(path, "no task list")
    tasks = [_entry(item, path, i) for i, item in enumerate(raw_tasks)]
    if len({t.dir for t in tasks}) != len(tasks):
        raise _damaged(path, "two tasks share a directory")
    info = data.get("info")
    return SweepRecord(
        mode,
        settings,
        tasks,
        _totals(data.get("totals"), path),
        info if isinstance(info, dict) else {},
    )


def _entry(item: Any, path: Path, index: int) -> TaskEntry:
    ok = (
        isinstance(item, dict)
        and isinstance(item.get("task"), str)
        and isinstance(item.get("dir"), str)
        and _safe_dir(item["dir"])
        and item.get("status") in STATUSES
        and all(
            item.get(k) is None or isinstance(item[k], str)
            for k in ("reason", "started", "finished")
        )
    )
    if not ok:
        raise _damaged(path, f"task {index} is not a task entry")
    return TaskEntry(**{f.name: item.get(f.name) for f in fields(TaskEntry)})


def _safe_dir(name: str) -> bool:
    """A plain directory name, or plain names joined by "/" (an ablation's
    `arms/<axis>=<value>/rep<r>`), never a path that leads out of the sweep directory."""
    return "\\" not in name and all(p not in ("", ".", "..") for p in name.split("/"))


def _totals(raw: Any, path: Path) -> SweepTotals:
    if raw is None:
        return SweepTotals()
    if not isinstance(raw, dict):
        raise _damaged(path, "totals is not an object")
    values: dict[str, Any] = {}
    for f in fields(SweepTotals):
        value = raw.get(f.name, 0)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < 0:
            raise _damaged(path, f"totals.{f.name} is not a non-negative number")
        values[f.name] = float(value) if f.type in ("float", float) else int(value)
    return SweepTotals(**values)


def _damaged(path: Path, why: str) -> SweepError:
    return SweepError(
        f"{path} is damaged ({why}); restore it, or start the sweep again in a new --run-dir"
    )
