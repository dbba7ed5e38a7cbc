"""A sweep whose tasks run on a Ray cluster; the driver keeps the sweep directory.

`ray_sweep(engine, settings, run_dir=..., options=RayOptions(...))` is `sweep.sweep` with
`RaySweepRunner` as the session: the same sweep.json, queue (largest task first, at most
`max_parallel_tasks` at once), events and resume rules. What differs:

- each queue worker owns a `TaskWorker` actor (`options.num_cpus` CPUs, spread over the
  nodes) and runs its tasks there, seeded with the driver's copy of each task's run
  directory; while a task runs, the driver polls its worker every `POLL_S` for what it
  wrote and applies it to the sweep directory (`cluster.files`), so the driver's copy is
  never more than one poll behind and `--resume` works on any cluster, or on none;
- every connection with a requests/tokens-per-minute limit gets one `LimiterActor` for
  the whole cluster, and the budget is one `BankActor` (`cluster.budget`) that journals to
  the driver's spend.json; both are placed on the driver's node when it is in the cluster;
- a worker that dies (its node was lost) is replaced by a new one, elsewhere if need be;
  the bank counts the lost worker's open chunks as spent, and the task starts again from
  the driver's copy of its run directory: only calls that were in flight on the lost node
  are paid again (everything else is in the shared cache, `options.cache`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

from opro.engine.budget import BudgetExceeded
from opro.engine.engine import Engine
from opro.engine.ledger import LEDGER, SpendLedger, stop_message
from opro.engine.spend import Spend
from opro.errors import OproError, SettingsError
from opro.optimize.runlog import CONFIG
from opro.sweep.events import SweepEvent, TaskLive, TaskStarted
from opro.sweep.run import sweep
from opro.sweep.runner import SweepResult, SweepRunner, TaskOutcome
from opro.sweep.settings import SweepSettings
from opro.sweep.state import SweepRecord, SweepTotals, TaskEntry, now_iso

log = logging.getLogger("opro.cluster")

POLL_S = 0.25  # how often the driver asks a running task's worker what it wrote
INSTALL = "pip install 'opro-engine[ray]'"


class ClusterError(OproError):
    """The Ray cluster cannot be used as asked; the message says what to do."""


@dataclass(frozen=True, slots=True)
class RayOptions:
    """How a sweep uses a Ray cluster.

    `address`: "auto" (the cluster this machine belongs to) or "ray://host:10001"; ignored
    when Ray is already initialised in this process. `cache`: the cache every worker opens
    (`caches.open.open_cache`; a directory on each node, or a shared backend), None for
    each node's default directory; `use_cache=False` for none. `num_cpus`: CPUs each
    worker reserves. `max_restarts`: how often a task whose worker died is started again.
    """

    address: str = "auto"
    cache: str | None = None
    use_cache: bool = True
    num_cpus: float = 1.0
    max_restarts: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.address, str):
            raise SettingsError("the Ray address is 'auto' or ray://HOST:PORT")
        remote = self.address.startswith("ray://") and len(self.address) > len("ray://")
        if self.address != "auto" and not remote:
            raise SettingsError(
                f"the Ray address is 'auto' or ray://HOST:PORT, got {self.address!r}"
            )
        cpus = self.num_cpus
        if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not (0 < cpus <= 1024):
            raise SettingsError(f"CPUs per Ray worker must be in (0, 1024], got {cpus!r}")
        if isinstance(self.max_restarts, bool) or not (0 <= self.max_restarts <= 100):
            raise SettingsError(f"max restarts must be in [0, 100], got {self.max_restarts!r}")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError(f"--ray needs Ray: {INSTALL}") from None
    return ray


async def ray_sweep(
    engine: Engine,
    settings: SweepSettings,
    *,
    run_dir: str | os.PathLike[str],
    options: RayOptions | None = None,
    resume: bool = False,
    on_event: Callable[[SweepEvent], None] | None = None,
    progress_every: float = 5.0,
    info: Mapping[str, Any] | None = None,
) -> RaySweepResult:
    """`sweep.sweep` with every task on a Ray cluster (see the module docstring). The
    engine's budget caps the whole cluster; its cache is not used by the workers (they
    open `options.cache`)."""
    options = options or RayOptions()
    ray = _ray()
    if not ray.is_initialized():
        try:
            # Ray's own notes on a failed connect (a client-builder INFO line, a timeout
            # UserWarning) would surround our one-line error; the error says it all.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                quiet = [logging.getLogger(n) for n in ("ray", "ray.client_builder")]
                levels = [q.level for q in quiet]
                for q in quiet:
                    q.setLevel(logging.WARNING)
                try:
                    ray.init(address=options.address, log_to_driver=False)
                finally:
                    for q, level in zip(quiet, levels, strict=True):
                        q.setLevel(level)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(f"cannot connect to Ray at {options.address}: {exc}") from None
    _check_cpus(ray, options.num_cpus)  # before the sweep directory is touched
    result = await sweep(
        engine,
        settings,
        run_dir=run_dir,
        resume=resume,
        on_event=on_event,
        progress_every=progress_every,
        info=info,
        runner=partial(RaySweepRunner, options),
    )
    assert isinstance(result, RaySweepResult)
    return result


@dataclass(slots=True)
class RaySweepResult(SweepResult):
    """`SweepResult` plus where the tasks ran: `nodes` maps each task finished in this
    session to its Ray node id; `restarts` counts tasks started again after their worker
    died."""

    nodes: dict[str, str] = field(default_factory=dict)
    restarts: int = 0


class TaskLost(OproError):
    """A task's worker died more often than `RayOptions.max_restarts` allows."""


class _Slot:
    """One queue worker's actor: created on first use, replaced when it dies."""

    def __init__(self, runner: RaySweepRunner) -> None:
        self.runner = runner
        self.actor: Any = None
        self.holder = ""

    def get(self) -> Any:
        if self.actor is None:
            from opro.cluster.actors import TaskWorker

            ray = _ray()
            self.holder = uuid.uuid4().hex
            cls = ray.remote(TaskWorker).options(
                num_cpus=self.runner.options.num_cpus,
                scheduling_strategy="SPREAD",
                max_restarts=0,
            )
            self.actor = cls.remote(self.runner.setup, self.holder)
        return self.actor

    async def lost(self) -> None:
        actor, self.actor = self.actor, None
        spent = await self.runner.bank.lost.remote(self.holder)
        self.runner.mirror(spent)
        with contextlib.suppress(Exception):
            _ray().kill(actor)

    async def close(self) -> None:
        actor, self.actor = self.actor, None
        if actor is None:
            return
        with contextlib.suppress(Exception):
            await actor.close.remote()
            # Exits once its calls are done, freeing its CPUs for workers still waiting.
            actor.__ray_terminate__.remote()


class RaySweepRunner(SweepRunner):
    """`SweepRunner` with each task run by a Ray actor (see the module docstring)."""

    def __init__(
        self,
        options: RayOptions,
        engine: Engine,
        settings: SweepSettings,
        directory: Path,
        record: SweepRecord,
        on_event: Callable[[SweepEvent], None] | None,
        progress_every: float,
    ) -> None:
        super().__init__(engine, settings, directory, record, on_event, progress_every)
        self.options = options
        self.bank: Any = None
        self.setup: Any = None
        self.limiters: dict[str, Any] = {}
        self.remote_hits = 0
        self.remote_n429 = 0
        self.restarts = 0  # tasks started again because their worker died
        self.nodes: dict[str, str] = {}  # task -> the Ray node it finished on
        self._slots: dict[str, _Slot] = {}

    def mirror(self, spent: Spend) -> None:
        """The bank's spend is the sweep's: the driver's budget shows it."""
        budget = self.engine.budget
        budget.spent = spent.at_least(budget.spent)

    # -- the cluster's services and the spend ledger ------------------------------------------

    @contextlib.asynccontextmanager
    async def recording(self, *, resume: bool) -> AsyncIterator[None]:
        ray = _ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from opro.cluster.actors import BankActor, LimiterActor, WorkerSetup

        ledger = SpendLedger(self.directory / LEDGER)
        prior = (ledger.load() if resume else None) or Spend()
        budget = self.engine.budget
        budget.spent = prior
        # On the driver's node, never elsewhere: a service on a worker node would die with it
        # (with Ray Client the driver's node is the head, where the client server runs).
        node = ray.get_runtime_context().get_node_id()
        here = NodeAffinitySchedulingStrategy(node, soft=False)
        service = {"num_cpus": 0, "scheduling_strategy": here, "max_concurrency": 10_000}
        self.bank = (
            ray.remote(BankActor)
            .options(**service)
            .remote(budget.max_usd, budget.max_tokens, prior)
        )
        for model in self.models.values():
            key, limits = model.provider.connection_key(), model.limiter.config
            if key not in self.limiters and (limits.rpm is not None or limits.tpm is not None):
                self.limiters[key] = ray.remote(LimiterActor).options(**service).remote(limits)
        self.setup = WorkerSetup(
            settings=self.settings,
            cache=self.options.cache,
            use_cache=self.options.use_cache,
            retry=self.engine.retry,
            max_usd=budget.max_usd,
            max_tokens=budget.max_tokens,
            limiters=self.limiters,
            bank=self.bank,
        )
        relay = asyncio.create_task(self._relay(ledger))
        try:
            yield
        finally:
            try:
                self.mirror(await self.bank.close.remote())  # the final, tight bound
            finally:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay
                for handle in [self.bank, *self.limiters.values()]:
                    with contextlib.suppress(Exception):
                        ray.kill(handle)

    async def _relay(self, ledger: SpendLedger) -> None:
        """Write the bank's journal writes to spend.json, in order, and acknowledge them."""
        while True:
            seq, settled, bound = await self.bank.next_write.remote()
            await asyncio.to_thread(ledger.write, seq, settled, bound)
            self.mirror(settled)
            await self.bank.written.remote(seq)

    # -- tasks ------------------------------------------------------------------------------

    async def _worker(self, queue: Any) -> None:
        slot = _Slot(self)
        try:
            while queue and self.stopped is None:
                entry = queue.popleft()
                self._slots[entry.task] = slot
                await self._run_task(entry)
        finally:
            await slot.close()

    async def _run_task(self, entry: TaskEntry) -> None:
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
            remote = await self._remote(entry, task_dir)
        except asyncio.CancelledError:
            self._end(entry, "stopped", "interrupted")
            raise
        except TaskLost as exc:
            self._end(entry, "failed", str(exc))
            return
        except Exception as exc:  # a bug, here or on the worker: recorded, then raised
            self._end(entry, "failed", f"internal error: {type(exc).__name__}: {exc}")
            raise
        outcome.result, outcome.report = remote.result, remote.report
        self.nodes[entry.task] = remote.node
        spent, _ = await self.bank.state.remote()  # the worker's chunks are settled by now
        self.mirror(spent)
        self.remote_hits += remote.cache_hits
        self.remote_n429 += remote.n429
        if remote.stopped is not None and self.stopped is None:
            self.stopped = remote.stopped
        reason = remote.reason
        if remote.status == "stopped" and remote.stopped == "budget":
            reason = stop_message(self.engine.budget, BudgetExceeded(reason or "budget"))
        self._end(entry, remote.status, reason)

    async def _remote(self, entry: TaskEntry, task_dir: Path) -> Any:
        ray = _ray()
        slot = self._slots[entry.task]
        prepared = self.prepared[entry.task]
        for attempt in range(self.options.max_restarts + 1):
            actor = slot.get()
            files = await asyncio.to_thread(_read_tree, task_dir)
            running = actor.run.remote(entry, prepared, files)
            try:
                return await self._follow(actor, running, entry, task_dir)
            except ray.exceptions.RayActorError as exc:
                self.restarts += 1
                log.warning(
                    "%s: its Ray worker died (%s); starting it again from %s (%d/%d)",
                    entry.task,
                    type(exc).__name__,
                    task_dir,
                    attempt + 1,
                    self.options.max_restarts,
                )
                await slot.lost()
        raise TaskLost(
            f"its Ray worker died {self.options.max_restarts + 1} times; resume to try again"
        )

    async def _follow(self, actor: Any, running: Any, entry: TaskEntry, task_dir: Path) -> Any:
        """Apply what the task writes while it runs; its outcome once it ends."""
        from opro.cluster.files import apply_changes

        done = asyncio.ensure_future(running)
        try:
            while True:
                finished, _ = await asyncio.wait([done], timeout=POLL_S)
                changes, live = await actor.changes.remote()
                if changes:
                    await asyncio.to_thread(apply_changes, task_dir, changes)
                if live is not None and not finished:
                    self.live[entry.task] = live
                    spent, _ = await self.bank.state.remote()
                    self.mirror(spent)
                if finished:
                    return done.result()
        finally:
            if not done.done():
                done.cancel()
            elif not done.cancelled():
                done.exception()  # retrieved: the caller sees the error another way

    def result(self) -> RaySweepResult:
        base = super().result()
        shared = {f.name: getattr(base, f.name) for f in fields(SweepResult)}
        return RaySweepResult(**shared, nodes=dict(self.nodes), restarts=self.restarts)

    def totals(self) -> SweepTotals:
        t = super().totals()
        return SweepTotals(
            calls=t.calls,
            cache_hits=t.cache_hits + self.remote_hits,
            n429=t.n429 + self.remote_n429,
            tokens_in=t.tokens_in,
            tokens_out=t.tokens_out,
            cost_usd=t.cost_usd,
            wall_s=t.wall_s,
        )


def _check_cpus(ray: Any, cpus: float) -> None:
    """A worker no node can hold would wait for one forever: say so before starting."""
    sizes = [n.get("Resources", {}).get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    largest = max(sizes, default=0.0)
    if cpus > largest:
        raise ClusterError(
            f"each task's Ray actor asks for {cpus:g} CPUs but the largest node of the "
            f"cluster has {largest:g}; give a smaller --ray-cpus"
        )


def _read_tree(root: Path) -> dict[str, bytes]:
    from opro.cluster.files import read_tree

    return read_tree(root)
