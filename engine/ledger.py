"""A run's spend ledger (`spend.json` in the run directory): the budget, across sessions.

The budget caps a run, not a process: `--budget-usd` on `--resume` is the run's total,
and what earlier sessions spent (stopped steps, crashed sessions) counts against it. The
ledger is one small JSON file, replaced atomically (temporary file, fsync, rename)::

    {"format": 1, "settled": {calls, tokens_in, tokens_out, cost_usd},
     "bound": {calls, tokens_in, tokens_out, cost_usd}}

`settled` is what finished calls cost when the file was written; `bound` is an upper bound
of everything the run may have been billed for until the next write: settled, the worst
case of every call in flight, and some headroom (see `engine.budget`). The budget writes
it before sending any call the old bound does not cover, in a worker thread, rarely (each
write makes room for about 1/32 of the cap). A kill -9 at any moment therefore leaves a
file whose bound covers every call that could have been billed; a resumed session starts
from that bound. A clean end writes a tight bound (settled + nothing in flight), so a run
stopped by its budget resumes with exactly what it was billed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from opro.engine.budget import Budget, starvation_note
from opro.engine.spend import Spend
from opro.errors import OproError

log = logging.getLogger("opro.budget")

LEDGER = "spend.json"
FORMAT = 1


class LedgerError(OproError):
    """The run's spend ledger cannot be read; the message says what to do."""


class SpendLedger:
    """`spend.json` of one run directory (or of a group of runs sharing one budget)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seq = 0

    def load(self) -> Spend | None:
        """What earlier sessions may have spent (the recorded bound); None without a file."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LedgerError(f"cannot read the run's spend ledger {self.path}: {exc}") from None
        try:
            data: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        ok = isinstance(data, dict) and data.get("format") == FORMAT
        settled = Spend.from_dict(data.get("settled")) if ok else None
        bound = Spend.from_dict(data.get("bound")) if ok else None
        if settled is None or bound is None:
            raise LedgerError(
                f"the run's spend ledger {self.path} is damaged, so what the run spent is "
                "unknown; restore it, or move it aside to count only the logged steps' spend"
            )
        return bound.at_least(settled)

    def write(self, seq: int, settled: Spend, bound: Spend) -> None:
        """Atomically replace the file; a write older than the last one stored is dropped."""
        data = orjson.dumps(
            {"format": FORMAT, "settled": settled.to_dict(), "bound": bound.to_dict()},
            option=orjson.OPT_INDENT_2,
        )
        with self._lock:
            if seq <= self._seq:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self._seq = seq


@asynccontextmanager
async def recording(
    budget: Budget,
    directory: Path,
    *,
    resume: bool,
    earlier: Callable[[], Spend] | None = None,
) -> AsyncIterator[None]:
    """Record `budget`'s spend in `directory`/spend.json while the block runs.

    With `resume` the spend recorded there before counts against the caps (for older runs
    without a ledger: what `earlier` says, e.g. the spend their step records show). On the
    way out the final spend is written with a tight bound (only if this session recorded
    anything, so a session that was refused before any call leaves the file as it was).
    """
    ledger = SpendLedger(directory / LEDGER)
    prior = Spend()
    if resume:
        loaded = ledger.load()
        if loaded is not None:
            prior = loaded
        elif earlier is not None:
            prior = earlier()
        _log_resumed_spend(ledger, prior, budget, found=loaded is not None)
    budget.record_to(ledger, prior)
    try:
        yield
    finally:
        await budget.flush()


def _log_resumed_spend(ledger: SpendLedger, prior: Spend, budget: Budget, *, found: bool) -> None:
    """What a resumed run has spent before, and what its caps leave for this session."""
    source = ledger.path.name if found else "its step records (no spend ledger)"
    left = []
    if budget.max_usd is not None:
        left.append(f"${max(0.0, budget.max_usd - prior.cost_usd):.4f} of ${budget.max_usd:g}")
    if budget.max_tokens is not None:
        left.append(f"{max(0, budget.max_tokens - prior.tokens)} of {budget.max_tokens} tokens")
    log.info(
        "resume: the run spent $%.4f, %d tokens in %d calls before (from %s); %s",
        prior.cost_usd,
        prior.tokens,
        prior.calls,
        source,
        "this session may spend " + " and ".join(left) if left else "no budget cap",
    )


def run_spend(budget: Budget | None, run_dir: str | os.PathLike[str] | None) -> Spend | None:
    """The run's total spend over all sessions, when `budget` records to `run_dir`'s ledger."""
    journal = budget.journal if budget is not None else None
    if run_dir is None or not isinstance(journal, SpendLedger):
        return None
    if journal.path.parent.resolve() != Path(run_dir).resolve():
        return None  # a budget shared by several runs: its ledger is not this run's
    assert budget is not None
    return budget.spent


def stop_message(budget: Budget, error: BaseException) -> str:
    """Why the budget stopped the run and how to continue, with the run's totals."""
    if budget.unrecorded is not None:
        return f"{budget.unrecorded}; fix that and resume"
    parts = []
    if budget.max_usd is not None:
        parts.append(
            f"run total ${budget.spent_usd:.4f} of ${budget.max_usd:g} cap; resume with a "
            "higher --budget-usd to continue"
        )
    if budget.max_tokens is not None:
        parts.append(
            f"run total {budget.spent_tokens} of {budget.max_tokens} tokens cap; resume with "
            "a higher --budget-tokens to continue"
        )
    note = starvation_note(budget)
    if note is not None:
        parts.append(note)
    return "; ".join(parts) or str(error)
