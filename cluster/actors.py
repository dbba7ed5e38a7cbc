"""The Ray actors of a sweep on a cluster: the per-task worker, the bank, the limiters.

`TaskWorker` runs sweep tasks, one at a time, on its node: one asyncio `Engine` for its
life (so a `local/` model loads once per actor and uses that node's cores), a cache from
`caches.open.open_cache(spec)`, a `cluster.budget.ChunkedBudget` drawing on the sweep's
`BankActor`, and, for every connection with a rate, a `cluster.leases.LeaseSource` drawing
on that connection's `LimiterActor`. A task runs exactly as in one process (the same
`sweep.runner.SweepRunner` code, on a record of that one task) in a node-local scratch
directory seeded with the driver's copy of the task's run directory; `changes()` tells the
driver what the task wrote since it last asked (`cluster.files`).

This module imports Ray; `cluster.driver` imports it only when a sweep runs on Ray.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from opro.caches.base import flush_writes
from opro.caches.open import open_cache
from opro.cluster.budget import BudgetBank, ChunkedBudget
from opro.cluster.files import Change, DirWatcher, seed_tree
from opro.cluster.leases import LeaseBucket, LeaseSource
from opro.engine.engine import Engine
from opro.engine.evaluate import EvalReport
from opro.engine.leases import CapacitySource
from opro.engine.limits import LimitConfig
from opro.engine.model import Model
from opro.engine.retry import RetryPolicy
from opro.engine.spend import Spend
from opro.optimize.loop import OptimizationResult
from opro.sweep.events import SweepEvent, TaskLive
from opro.sweep.runner import SweepRunner
from opro.sweep.settings import SweepSettings
from opro.sweep.state import SweepRecord, TaskEntry, TaskStatus


@dataclass(frozen=True, slots=True)
class RemoteOutcome:
    """How a task ended on its worker, with what its models counted meanwhile."""

    status: TaskStatus
    reason: str | None
    stopped: str | None  # the local runner's: "budget", "rate limit", "error" or None
    result: OptimizationResult | None
    report: EvalReport | None
    cache_hits: int
    n429: int
    node: str  # the Ray node it ran on


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What every worker of a sweep is built with (sent once, at creation)."""

    settings: SweepSettings
    cache: str | None
    use_cache: bool
    retry: RetryPolicy
    max_usd: float | None
    max_tokens: int | None
    limiters: dict[str, Any]  # connection key -> its LimiterActor handle
    bank: Any  # the BankActor handle


class TaskWorker:
    """Runs sweep tasks on its node (see the module docstring); a Ray actor."""

    def __init__(self, setup: WorkerSetup, holder: str) -> None:
        self.setup = setup
        self.holder = holder  # this worker's name at the bank
        self.scratch = Path(tempfile.mkdtemp(prefix="opro-ray-"))
        self.engine: Engine | None = None
        self.models: dict[tuple[str, int], Model] = {}
        self.runner: SweepRunner | None = None
        self.watcher: DirWatcher | None = None
        self.task: str | None = None

    def node(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def _engine(self) -> Engine:
        if self.engine is None:
            s = self.setup
            bank = s.bank

            async def grant(size: Spend, least: Spend) -> tuple[int, Spend, Spend]:
                granted: tuple[int, Spend, Spend] = await bank.grant.remote(
                    self.holder, size, least
                )
                return granted

            async def settle(chunk: int, cost: Spend) -> Spend:
                spent: Spend = await bank.settle.remote(self.holder, chunk, cost)
                return spent

            budget = ChunkedBudget(grant, settle, max_usd=s.max_usd, max_tokens=s.max_tokens)
            self.engine = Engine(
                cache=open_cache(s.cache) if s.use_cache else None,
                use_cache=s.use_cache,
                retry=s.retry,
                budget=budget,
                capacity=self._capacity,
            )
        return self.engine

    def _capacity(self, key: str, limits: LimitConfig) -> CapacitySource | None:
        handle = self.setup.limiters.get(key)
        if handle is None:
            return None

        async def fetch(requests: int, tokens: int) -> tuple[int, int]:
            got: tuple[int, int] = await handle.grant.remote(requests, tokens)
            return got

        return LeaseSource(fetch, LeaseBucket(limits).lease_size())

    async def run(self, entry: TaskEntry, prepared: Any, files: dict[str, bytes]) -> RemoteOutcome:
        """Run one task from the driver's copy of its run directory (`files`)."""
        engine = self._engine()
        settings = self.setup.settings
        task_dir = self.scratch / entry.dir
        shutil.rmtree(task_dir, ignore_errors=True)
        await asyncio.to_thread(seed_tree, task_dir, files)
        self.watcher = DirWatcher(task_dir)
        record = SweepRecord(settings.mode, {}, [entry])

        def on_event(event: SweepEvent) -> None:
            """Progress goes back through `changes()`."""

        runner = SweepRunner(engine, settings, self.scratch, record, on_event, 3600.0)
        runner.models = self.models  # built once per worker, reused by every task
        runner.prepared[entry.task] = prepared
        runner._model("scorer", prepared.task)
        if settings.mode == "optimize":
            runner._model("optimizer", prepared.task)
        before = self._counts()
        self.runner, self.task = runner, entry.task
        try:
            await runner.run()
        finally:
            await engine.budget.flush()  # the open chunk back to the bank
            if engine.cache is not None:
                await flush_writes(engine.cache)  # paid results stored before we report
        after = self._counts()
        outcome = runner.result().tasks[0]
        return RemoteOutcome(
            outcome.status,
            outcome.reason,
            runner.stopped,
            outcome.result,
            outcome.report,
            after[0] - before[0],
            after[1] - before[1],
            self.node(),
        )

    def _counts(self) -> tuple[int, int]:
        models = self.models.values()
        return (
            sum(m.stats.cache_hits + m.stats.shared for m in models),
            sum(m.stats.n429 for m in models),
        )

    async def changes(self) -> tuple[list[Change], TaskLive | None]:
        """What the running task wrote since the last call, and where it stands."""
        watcher, runner = self.watcher, self.runner
        if watcher is None or runner is None or self.task is None:
            return [], None
        found = await asyncio.to_thread(watcher.changes)
        return found, runner.live.get(self.task)

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.aclose()
        shutil.rmtree(self.scratch, ignore_errors=True)


class BankActor:
    """The sweep's `BudgetBank`, as a Ray actor (created on its first call's loop)."""

    def __init__(self, max_usd: float | None, max_tokens: int | None, prior: Spend) -> None:
        self._args = (max_usd, max_tokens, prior)
        self._bank: BudgetBank | None = None

    def _get(self) -> BudgetBank:
        if self._bank is None:
            self._bank = BudgetBank(*self._args)
        return self._bank

    async def grant(self, holder: str, size: Spend, least: Spend) -> tuple[int, Spend, Spend]:
        return await self._get().grant(holder, size, least)

    async def settle(self, holder: str, chunk: int, cost: Spend) -> Spend:
        return self._get().settle(holder, chunk, cost)

    async def lost(self, holder: str) -> Spend:
        return self._get().lost(holder)

    async def state(self) -> tuple[Spend, Spend]:
        return self._get().state()

    async def next_write(self) -> tuple[int, Spend, Spend]:
        return await self._get().journal.queue.get()

    async def written(self, seq: int) -> None:
        self._get().journal.written(seq)

    async def close(self) -> Spend:
        """Write the final spend with a tight bound (through the driver); what is spent."""
        bank = self._get()
        await bank.budget.flush()
        return bank.budget.spent


class LimiterActor:
    """One connection's `LeaseBucket`, as a Ray actor."""

    def __init__(self, limits: LimitConfig) -> None:
        self.bucket = LeaseBucket(limits)

    async def grant(self, requests: int, tokens: int) -> tuple[int, int]:
        return await self.bucket.grant(requests, tokens)

    async def granted(self) -> int:
        return self.bucket.granted_requests
