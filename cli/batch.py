"""What `--batch` adds to the commands: its settings, its checks, and its run directory.

`opro optimize --batch` scores each step's candidates in one batch (state in the run's
`--run-dir`); `opro sweep --evaluate-only --batch` sends one batch over every task's pairs
(state in the sweep directory).

`opro evaluate --batch` keeps the batch state (`batches.json`) and the run's spend ledger
(`spend.json`) in `--run-dir DIR`, which it requires: a batch may take up to 24 hours, and
the directory is what lets `--resume` (after a kill -9, a reboot, a closed laptop) collect
the batch instead of paying for it again; the budget is then the run's total over all
sessions, as for `opro optimize`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from opro.cli.options import DEFAULT_MODEL, BatchOptionSettings
from opro.cli.settings import Settings, UsageError
from opro.engine.batch import BatchSettings
from opro.engine.batch_state import STATE_FILE
from opro.engine.budget import Budget
from opro.engine.ledger import LEDGER, recording

FIRST_POLL_S = 5.0
BATCH_PROVIDERS = ("openai", "openai-compatible", "anthropic")


def batch_settings(s: Settings) -> BatchSettings:
    """The engine's batch settings from the command's options."""
    opts = s.pick(BatchOptionSettings)
    poll_max = float(opts.batch_poll_max)
    return BatchSettings(
        retry="live" if opts.batch_retry == "live" else "batch",
        poll_first_s=min(FIRST_POLL_S, poll_max),
        poll_max_s=poll_max,
    )


def check_batch_scorer(s: Settings) -> None:
    """With `--batch`, the one-line error for a scorer whose vendor has no batch API."""
    if not s.get("batch"):
        return
    spec = s.get("scorer") or DEFAULT_MODEL
    if spec.split("/", 1)[0] not in BATCH_PROVIDERS:
        raise UsageError(
            f"--batch needs a scorer with a batch API ({', '.join(BATCH_PROVIDERS)}); "
            f"{spec} has none: drop --batch"
        )


def batch_run_dir(s: Settings) -> Path | None:
    """The run directory of a `--batch` evaluation (None without `--batch`); the one-line
    errors for a missing directory or a `--resume` that cannot mean anything."""
    if not s["batch"]:
        for flag in ("run_dir", "resume"):
            if s.get(flag):
                raise UsageError(f"{s.where(flag)} is for --batch evaluations: add --batch")
        return None
    check_batch_scorer(s)
    if s["dry_run"]:
        return None
    if not s.get("run_dir"):
        raise UsageError(
            "--batch needs --run-dir DIR: the batch state lives there, so that --resume "
            "collects a pending batch instead of paying for it again"
        )
    run_dir = Path(s["run_dir"])
    earlier = [name for name in (STATE_FILE, LEDGER) if (run_dir / name).exists()]
    if earlier and not s["resume"]:
        raise UsageError(
            f"{run_dir} holds an earlier batch evaluation ({', '.join(earlier)}): add "
            "--resume to continue it (what it spent counts against the budget), or give "
            "another --run-dir"
        )
    return run_dir


@asynccontextmanager
async def batch_ledger(budget: Budget, run_dir: Path, *, resume: bool) -> AsyncIterator[None]:
    """Record the budget in `run_dir`/spend.json, so the cap holds across resumes and a
    pending batch's reservation survives a crash (see `engine.batch`)."""
    async with recording(budget, run_dir, resume=resume):
        yield
