"""One budget for a whole cluster: a bank (in one Ray actor) and each node's chunks of it.

`BudgetBank` holds the sweep's real `engine.budget.Budget` (the caps, what is spent, what
is reserved) in the bank actor. A node does not reserve each call there: its
`ChunkedBudget` reserves a chunk (the worst case of about 16 calls, at most 1/16 of a
cap) as one reservation of the bank's budget, draws each call's worst case from it
locally, and settles the chunk with what its calls really cost once it is closed (full,
idle for `CHUNK_IDLE_S`, or at the end of the task) and its calls have settled. So the
sum over all nodes of spent + reserved is the bank's spent + reserved, which the bank's
`Budget` keeps under the cap exactly as it does for one process: a chunk that does not
fit waits for other chunks to settle, and when a call cannot fit even beside what is
spent the node gets `BudgetExceeded` and its task stops cleanly. A node that is lost
(its actor died) has each open chunk settled at its full size: whatever it may have
been billed for is counted, never less.

The bank's budget journals to the driver's spend.json through `RelayJournal`: the bank
hands each journal write (seq, settled, bound) to the driver, which polls for it, writes
spend.json with `engine.ledger.SpendLedger` and acknowledges; as in one process, no chunk
is granted that the file's bound does not cover, so a kill -9 of the whole cluster loses
nothing billed. If the driver does not acknowledge within `JOURNAL_TIMEOUT_S`, the bank
refuses to grant (the run stops, resumable).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from opro.engine.budget import Budget, BudgetExceeded, Reservation
from opro.engine.spend import Spend

CHUNK_CALLS = 16  # a chunk is the worst case of this many calls like the one asking
CHUNK_PARTS = 16  # and at most this fraction of each cap
CHUNK_IDLE_S = 0.5  # a chunk nobody drew from for this long goes back to the bank
JOURNAL_TIMEOUT_S = 60.0


class RelayJournal:
    """A `Journal` whose writes the driver performs: `write` (in the budget's worker
    thread) waits until the driver has taken the write (`next_write`) and acknowledged
    it (`written`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.queue: asyncio.Queue[tuple[int, Spend, Spend]] = asyncio.Queue()
        self._acks: dict[int, threading.Event] = {}

    def write(self, seq: int, settled: Spend, bound: Spend) -> None:
        done = self._acks[seq] = threading.Event()
        self._loop.call_soon_threadsafe(self.queue.put_nowait, (seq, settled, bound))
        if not done.wait(JOURNAL_TIMEOUT_S):
            self._acks.pop(seq, None)
            raise OSError(f"the driver did not record the spend within {JOURNAL_TIMEOUT_S:g} s")

    def written(self, seq: int) -> None:
        done = self._acks.pop(seq, None)
        if done is not None:
            done.set()


class BudgetBank:
    """The cluster's budget (see the module docstring); one per sweep, in the bank actor."""

    def __init__(self, max_usd: float | None, max_tokens: int | None, prior: Spend) -> None:
        self.budget = Budget(max_usd=max_usd, max_tokens=max_tokens)
        self.journal = RelayJournal(asyncio.get_running_loop())
        self.budget.record_to(self.journal, prior)
        self._chunks: dict[str, dict[int, Reservation]] = {}
        self._ids = itertools.count(1)

    async def grant(self, holder: str, size: Spend, least: Spend) -> tuple[int, Spend, Spend]:
        """Reserve a chunk for `holder`: `size` when it fits now, else `least` (waiting for
        other chunks to settle). Returns (chunk id, its size, what is spent); id 0 means
        refused: `least` cannot fit even beside what is spent."""
        budget = self.budget
        try:
            if budget._fits(size, with_reserved=True):
                reservation = await budget.reserve(size)
            else:
                reservation = await budget.reserve(least)
        except BudgetExceeded:
            return 0, Spend(), budget.spent
        chunk = next(self._ids)
        self._chunks.setdefault(holder, {})[chunk] = reservation
        return chunk, reservation.cost, budget.spent

    def settle(self, holder: str, chunk: int, cost: Spend) -> Spend:
        """A closed chunk's calls cost `cost` in all; returns what is spent now."""
        reservation = self._chunks.get(holder, {}).pop(chunk, None)
        if reservation is not None:
            self.budget.settle(reservation, cost)
        return self.budget.spent

    def lost(self, holder: str) -> Spend:
        """`holder` is gone: each of its open chunks counts as spent in full."""
        for reservation in self._chunks.pop(holder, {}).values():
            self.budget.settle(reservation, reservation.cost)
        return self.budget.spent

    def state(self) -> tuple[Spend, Spend]:
        return self.budget.spent, self.budget.reserved


Grant = Callable[[Spend, Spend], Awaitable[tuple[int, Spend, Spend]]]
Settle = Callable[[int, Spend], Awaitable[Spend]]


@dataclass(slots=True)
class _Chunk:
    id: int
    left: Spend
    spent: Spend = field(default_factory=Spend)
    draws: int = 0
    closed: bool = False
    idle: asyncio.TimerHandle | None = None


@dataclass(frozen=True, slots=True)
class _Draw(Reservation):
    chunk: _Chunk | None = None


class ChunkedBudget(Budget):
    """A node's view of the bank: calls draw from chunks the bank granted (see the module
    docstring). `spent` is this node's own spend; `seen_spent` the whole cluster's, as of
    the last answer of the bank."""

    def __init__(
        self, grant: Grant, settle: Settle, *, max_usd: float | None, max_tokens: int | None
    ) -> None:
        super().__init__(max_usd=max_usd, max_tokens=max_tokens)
        self._grant = grant
        self._settle_remote = settle
        self._open: _Chunk | None = None
        self._lock = asyncio.Lock()
        self._settling: set[asyncio.Task[None]] = set()
        self.seen_spent = Spend()

    def _fits_cluster(self, cost: Spend) -> bool:
        seen = self.seen_spent
        if self.max_usd is not None and seen.cost_usd + cost.cost_usd > self.max_usd:
            return False
        return not (self.max_tokens is not None and seen.tokens + cost.tokens > self.max_tokens)

    def check(self, cost: Spend) -> None:
        if not self._fits_cluster(cost):
            self.refused += 1
            raise BudgetExceeded(self.describe())

    async def reserve(self, cost: Spend) -> Reservation:
        async with self._lock:
            chunk = self._open
            if chunk is None or not chunk.left.covers(cost):
                if chunk is not None:
                    self._close(chunk)
                chunk = self._open = await self._new_chunk(cost)
            chunk.left = chunk.left - cost
            chunk.draws += 1
            if chunk.idle is not None:
                chunk.idle.cancel()
                chunk.idle = None
            self.reserved += cost
            return _Draw(cost, chunk)

    async def _new_chunk(self, cost: Spend) -> _Chunk:
        chunk_id, size, seen = await self._grant(self._chunk_size(cost), cost)
        self.seen_spent = seen.at_least(self.seen_spent)
        if chunk_id == 0:
            self.refused += 1
            raise BudgetExceeded(self.describe())
        return _Chunk(chunk_id, size)

    def _chunk_size(self, cost: Spend) -> Spend:
        k = float(CHUNK_CALLS)
        if self.max_usd is not None and cost.cost_usd > 0:
            k = min(k, self.max_usd / CHUNK_PARTS / cost.cost_usd)
        if self.max_tokens is not None and cost.tokens > 0:
            k = min(k, self.max_tokens / CHUNK_PARTS / cost.tokens)
        return cost.times(max(1, math.floor(k)))

    def settle(self, reservation: Reservation, cost: Spend) -> None:
        if not cost.valid():
            cost = reservation.cost
        self.reserved -= reservation.cost
        if self.reserved.calls == 0:
            self.reserved = Spend()
        self.spent += cost
        chunk = reservation.chunk if isinstance(reservation, _Draw) else None
        if chunk is None:
            return
        chunk.spent += cost
        chunk.draws -= 1
        if chunk.draws == 0:
            if chunk.closed:
                self._send(chunk)
            else:
                loop = asyncio.get_running_loop()
                chunk.idle = loop.call_later(CHUNK_IDLE_S, self._close, chunk)

    def _close(self, chunk: _Chunk) -> None:
        if chunk.closed:
            return
        chunk.closed = True
        if self._open is chunk:
            self._open = None
        if chunk.idle is not None:
            chunk.idle.cancel()
            chunk.idle = None
        if chunk.draws == 0:
            self._send(chunk)

    def _send(self, chunk: _Chunk) -> None:
        task = asyncio.create_task(self._settle_chunk(chunk))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle_chunk(self, chunk: _Chunk) -> None:
        seen = await self._settle_remote(chunk.id, chunk.spent)
        self.seen_spent = seen.at_least(self.seen_spent)

    async def flush(self) -> None:
        """Give the open chunk back and wait until every closed chunk is settled."""
        if self._open is not None:
            self._close(self._open)
        while self._settling:
            await asyncio.gather(*list(self._settling))
