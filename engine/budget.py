"""A hard cap on what a run may spend, in USD and/or tokens, across all of its models.

Every call reserves its worst case before it is sent (an upper bound of its prompt tokens
plus max_tokens for each sample) and settles with the real usage afterwards. A call whose
reservation does not fit beside what is spent and already reserved is never sent: it waits
while other calls' reservations are outstanding (they usually settle for less), and when
it cannot fit even beside what is already spent the caller gets `BudgetExceeded` and stops
cleanly. So the total can never pass the cap, at any concurrency and through any number of
retries. Reservations are taken only by calls that hold a connection slot, so a long queue
of waiting requests never blocks the budget.

The worst case is `engine.tokens.worst_case_usage` (the prompt's UTF-8 bytes plus a
per-message allowance, and max_tokens per sample: a true upper bound). A server that
reports more than the bound is charged what it reports (it billed that); the model logs it.

A budget belongs to a run, not to a process: it can start from what earlier sessions spent
(`spent=` or `record_to`), so a cap given on resume is the run's total. With a `Journal`
(the run directory's ledger, `engine.ledger`) it also survives kill -9: before a call is
sent, the journal durably holds a bound that covers everything spent, everything in flight
and that call; a crash can therefore lose nothing billed, only overcount by the calls that
were in flight and the headroom (1/32 of the cap) granted per write, which keeps writes
rare and off the hot path (they run in a worker thread, serialised).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, replace
from typing import Protocol

from opro.checks import BUDGET_TOKENS, BUDGET_USD
from opro.engine.spend import NOTHING, Spend
from opro.errors import OproError, SettingsError

log = logging.getLogger("opro.budget")

# A journal write grants room for up to this fraction of a cap beyond the call that needed
# it (see `Budget._headroom`), so writes stay rare.
HEADROOM_PARTS = 32
MIN_HEADROOM_CALLS = 4  # without a cap
MAX_HEADROOM_CALLS = 4096


class BudgetExceeded(OproError):
    """The next call could take the run over its budget; nothing was sent.

    `paid` is what the refused caller had already spent on earlier attempts of the same
    request (retries), so reports can count it although no answer came back.
    """

    def __init__(self, message: str, *, paid: Spend = NOTHING, n429: int = 0) -> None:
        super().__init__(message)
        self.paid = paid
        self.n429 = n429


class Journal(Protocol):
    """Durable storage of a budget's spend; `write` blocks (the budget calls it in a thread).

    `settled` is what finished calls cost; `bound` is at least everything the run may have
    been billed for until the next write (settled + in flight + headroom). Writes carry an
    increasing `seq`; a write older than one already stored must be ignored.
    """

    def write(self, seq: int, settled: Spend, bound: Spend) -> None: ...


@dataclass(frozen=True, slots=True)
class Reservation:
    cost: Spend


class Budget:
    """Spent + reserved never exceeds `max_usd` / `max_tokens` (None = no cap).

    `spent` starts at what the run spent before (earlier sessions): the caps are totals.
    """

    def __init__(
        self,
        *,
        max_usd: float | None = None,
        max_tokens: int | None = None,
        spent: Spend = NOTHING,
    ) -> None:
        # NaN would fail every "over the cap?" test and leave the run uncapped.
        if max_usd is not None:
            BUDGET_USD.check("the USD budget", max_usd)
        if max_tokens is not None:
            BUDGET_TOKENS.check("the token budget", max_tokens)
        if not spent.valid():
            raise SettingsError(f"prior spend must be non-negative and finite, got {spent}")
        self.max_usd = max_usd
        self.max_tokens = max_tokens
        self.spent = spent
        self.reserved = Spend()
        self.refused = 0
        self.refused_cost: Spend | None = None  # the worst case of the last call refused
        # What a call is expected to cost (set from the run's plan), for the stop message.
        self.expected_call: Spend | None = None
        self.over_bound = 0  # settlements above their reservation: the server billed more
        self.unrecorded: str | None = None  # why the journal could not be written, if so
        self._waiters: list[asyncio.Future[None]] = []
        self._journal: Journal | None = None
        self._bound: Spend | None = None  # what the journal holds as the bound
        self._seq = 0
        self._adopted = False
        self._lock = asyncio.Lock()

    @property
    def limited(self) -> bool:
        return self.max_usd is not None or self.max_tokens is not None

    @property
    def spent_usd(self) -> float:
        return self.spent.cost_usd

    @property
    def spent_tokens(self) -> int:
        return self.spent.tokens

    @property
    def reserved_usd(self) -> float:
        return self.reserved.cost_usd

    @property
    def reserved_tokens(self) -> int:
        return self.reserved.tokens

    @property
    def journal(self) -> Journal | None:
        return self._journal

    def record_to(self, journal: Journal, prior: Spend = NOTHING) -> None:
        """Record every charge in `journal` from now on; `prior` is what it says was spent.

        Call it before the first call: the run's earlier spend counts against the caps.
        """
        if self.reserved.calls or self.spent != Spend():
            raise RuntimeError("a budget must be attached to its journal before any call")
        if not prior.valid():
            raise ValueError(f"prior spend must be non-negative and finite, got {prior}")
        self.spent = prior
        self._journal = journal
        self._bound = prior

    def _fits(self, cost: Spend, *, with_reserved: bool) -> bool:
        total = self.spent + self.reserved if with_reserved else self.spent
        if self.max_usd is not None and total.cost_usd + cost.cost_usd > self.max_usd:
            return False
        return not (self.max_tokens is not None and total.tokens + cost.tokens > self.max_tokens)

    def check(self, cost: Spend) -> None:
        """Raise `BudgetExceeded` now if the call cannot fit even beside what is spent."""
        if not self._fits(cost, with_reserved=False):
            self.refused += 1
            self.refused_cost = cost
            level = logging.INFO if self.refused == 1 else logging.DEBUG
            if log.isEnabledFor(level):  # every waiting call is refused: keep it cheap
                log.log(
                    level,
                    "%s: refusing a call whose worst case is %s (refusal %d)",
                    self.describe(),
                    _shown(cost),
                    self.refused,
                )
            raise BudgetExceeded(self.describe())

    async def reserve(self, cost: Spend) -> Reservation:
        """Hold room for a call's worst case, waiting for outstanding ones to settle, and
        (with a journal) for the journal to cover it."""
        while True:
            while not self._fits(cost, with_reserved=True):
                self.check(cost)
                if self.reserved.calls == 0:  # pragma: no cover - _fits would have held
                    raise BudgetExceeded(self.describe())
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._waiters.append(fut)
                await fut
            if self._bound is None or self._bound.covers(self.spent + self.reserved + cost):
                break
            await self._sync(cost)
        self.reserved += cost
        return Reservation(cost)

    def adopt(self, cost: Spend) -> Reservation | None:
        """Turn `cost` of the prior spend back into a reservation, or None when the prior
        spend does not hold it. For a batch an earlier session reserved and submitted (its
        worst case is in the recorded bound) whose results this session collects: settling
        it then charges what it really cost instead of its worst case on top of it."""
        if not self.spent.covers(cost):
            return None
        left = self.spent - cost
        self.spent = replace(left, cost_usd=max(0.0, left.cost_usd))
        self.reserved += cost
        self._adopted = True  # so `flush` records what it settles for, even with no write yet
        return Reservation(cost)

    def settle(self, reservation: Reservation, cost: Spend) -> None:
        """Replace a reservation by what the call really cost, and wake waiting calls.

        A charge that is not a valid spend (negative, NaN) can only come from a bug; the
        reservation (the worst case) is charged instead, never a credit. A charge above
        the reservation is what the server billed beyond the bound: it is charged as is.
        """
        if not cost.valid():
            log.error("invalid charge %r: charging the worst case %r", cost, reservation.cost)
            cost = reservation.cost
        if not reservation.cost.covers(cost):
            self.over_bound += 1
        self.reserved -= reservation.cost
        if self.reserved.calls == 0:
            self.reserved = Spend()  # no float residue once nothing is in flight
        self.spent += cost
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def flush(self) -> None:
        """Write what is spent to the journal now, with a bound tightened to what is
        spent and in flight (a crash after this overcounts by the calls in flight only)."""
        # Nothing recorded (and no batch adopted), nothing to fix.
        if self._journal is not None and (self._seq > 0 or self._adopted):
            await self._sync(None)

    async def _sync(self, cost: Spend | None) -> None:
        # A task of its own, so a cancelled caller cannot interrupt a write half-way.
        task = asyncio.ensure_future(self._write(cost))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.shield(task)

    async def _write(self, cost: Spend | None) -> None:
        async with self._lock:
            journal, old = self._journal, self._bound
            assert journal is not None and old is not None
            live = self.spent + self.reserved
            if cost is None:
                bound = live
            elif old.covers(live + cost) or not self._fits(cost, with_reserved=True):
                return  # another write made room, or others took it: the caller looks again
            else:
                bound = old.at_least(self._headroom(cost, live + cost))
            # Until the write lands, new reservations must fit under both bounds.
            self._bound = old.at_most(bound)
            self._seq += 1
            log.debug("recording spend %s with bound %s", _shown(self.spent), _shown(bound))
            try:
                await asyncio.to_thread(journal.write, self._seq, self.spent, bound)
            except OSError as exc:
                # Nothing is sent that the journal does not cover: this stops the run.
                self.unrecorded = f"cannot record the run's spend: {exc}"
                raise BudgetExceeded(self.unrecorded) from exc
            self._bound = bound

    def _headroom(self, cost: Spend, base: Spend) -> Spend:
        """The bound one journal write grants: `base` plus room for more calls like `cost`.

        At most 1/32 of each cap, which is what a crash can cost a capped run beyond the
        calls in flight (uncapped: 1/16 of the run so far). Calls get their own, larger
        room: a call always uses up one, however little it costs.
        """
        limits: list[float] = [MAX_HEADROOM_CALLS]
        if self.max_usd is not None and cost.cost_usd > 0:
            limits.append(self.max_usd / HEADROOM_PARTS / cost.cost_usd)
            limits.append((self.max_usd - base.cost_usd) / cost.cost_usd)
        if self.max_tokens is not None and cost.tokens > 0:
            limits.append(self.max_tokens / HEADROOM_PARTS / cost.tokens)
            limits.append((self.max_tokens - base.tokens) / cost.tokens)
        if len(limits) == 1:  # no cap applies: grow with the run
            limits.append(max(MIN_HEADROOM_CALLS, base.calls / 16))
        k = max(0, math.floor(min(limits)))
        calls = max(k, MIN_HEADROOM_CALLS * 8, base.calls // HEADROOM_PARTS)
        return base + cost.times(k) + Spend(calls=calls - k)

    def describe(self) -> str:
        parts = []
        if self.max_usd is not None:
            parts.append(f"${self.spent_usd:.4f} of ${self.max_usd:g} spent")
        if self.max_tokens is not None:
            parts.append(f"{self.spent_tokens} of {self.max_tokens} tokens spent")
        return "budget reached: " + ", ".join(parts or ["no limit"])


def starvation_note(budget: Budget) -> str | None:
    """Why a budget stopped a run with money left: the next call's worst case did not fit
    although its expected cost would have. None when the expected cost would not fit either
    (the budget is really spent) or nothing was refused."""
    cost, expected = budget.refused_cost, budget.expected_call
    if cost is None:
        return None
    if budget.max_usd is not None:
        left = max(0.0, budget.max_usd - budget.spent_usd)
        if cost.cost_usd > left and (expected is None or expected.cost_usd <= left):
            about = "" if expected is None else f", expected ${expected.cost_usd:.4g}"
            return (
                f"stopped with ${left:.4f} of ${budget.max_usd:.2f} unspent: each call reserves "
                f"its worst case (${cost.cost_usd:.4g} at {cost.tokens_out} output tokens"
                f"{about}) until billed; raise --budget-usd or lower --max-tokens"
            )
    if budget.max_tokens is not None:
        left_t = max(0, budget.max_tokens - budget.spent_tokens)
        if cost.tokens > left_t and (expected is None or expected.tokens <= left_t):
            about = "" if expected is None else f", expected {expected.tokens}"
            return (
                f"stopped with {left_t} of {budget.max_tokens} tokens unspent: each call "
                f"reserves its worst case ({cost.tokens} tokens at {cost.tokens_out} output "
                f"tokens{about}) until billed; raise --budget-tokens or lower --max-tokens"
            )
    return None


def _shown(spend: Spend) -> str:
    return f"${spend.cost_usd:.6f}, {spend.tokens} tokens, {spend.calls} calls"
