"""A hard cap on what a run may spend, in USD and/or tokens, across all of its models.

Every call reserves its worst case before it is sent (an upper bound of its prompt tokens
plus max_tokens for each sample) and settles with the real usage afterwards. A call whose
reservation does not fit beside what is spent and already reserved is never sent: it waits
while other calls' reservations are outstanding (they usually settle for less), and when
it cannot fit even beside what is already spent the caller gets `BudgetExceeded` and stops
cleanly. So the total can never pass the cap, at any concurrency and through any number of
retries. Reservations are taken only by calls that hold a connection slot, so a long queue
of waiting requests never blocks the budget.

The prompt bound is the UTF-8 byte count plus a per-message allowance: byte-level BPE
tokenizers never produce more tokens than bytes, and chat templates add a few tokens per
message. It over-reserves about fourfold on English text, which only means the run stops
one reservation early rather than one call late.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from opro.checks import BUDGET_TOKENS, BUDGET_USD
from opro.errors import OproError
from opro.providers.types import Request, Usage

# Tokens a chat template may add around each message (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 16


class BudgetExceeded(OproError):
    """The next call could take the run over its budget; nothing was sent."""


def worst_case_usage(request: Request) -> Usage:
    """An upper bound on the tokens `request` can be billed for."""
    if request.messages is not None:
        prompt = sum(len(m.content.encode()) + MESSAGE_OVERHEAD_TOKENS for m in request.messages)
    else:
        prompt = len(request.as_text().encode()) + MESSAGE_OVERHEAD_TOKENS
    return Usage(prompt, request.max_tokens * request.n)


@dataclass(frozen=True, slots=True)
class Reservation:
    usd: float
    tokens: int


class Budget:
    """Spent + reserved never exceeds `max_usd` / `max_tokens` (None = no cap)."""

    def __init__(self, *, max_usd: float | None = None, max_tokens: int | None = None) -> None:
        # NaN would fail every "over the cap?" test and leave the run uncapped.
        if max_usd is not None:
            BUDGET_USD.check("the USD budget", max_usd)
        if max_tokens is not None:
            BUDGET_TOKENS.check("the token budget", max_tokens)
        self.max_usd = max_usd
        self.max_tokens = max_tokens
        self.spent_usd = 0.0
        self.spent_tokens = 0
        self.reserved_usd = 0.0
        self.reserved_tokens = 0
        self.refused = 0
        self._outstanding = 0
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def limited(self) -> bool:
        return self.max_usd is not None or self.max_tokens is not None

    def _fits(self, usd: float, tokens: int, *, with_reserved: bool) -> bool:
        r_usd = self.reserved_usd if with_reserved else 0.0
        r_tokens = self.reserved_tokens if with_reserved else 0
        if self.max_usd is not None and self.spent_usd + r_usd + usd > self.max_usd:
            return False
        return not (
            self.max_tokens is not None and self.spent_tokens + r_tokens + tokens > self.max_tokens
        )

    def check(self, usd: float, tokens: int) -> None:
        """Raise `BudgetExceeded` now if the call cannot fit even beside what is spent."""
        if not self._fits(usd, tokens, with_reserved=False):
            self.refused += 1
            raise BudgetExceeded(self.describe())

    async def reserve(self, usd: float, tokens: int) -> Reservation:
        """Hold room for a call's worst case, waiting for outstanding ones to settle."""
        while not self._fits(usd, tokens, with_reserved=True):
            self.check(usd, tokens)
            if self._outstanding == 0:  # pragma: no cover - _fits would have held
                raise BudgetExceeded(self.describe())
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            await fut
        self.reserved_usd += usd
        self.reserved_tokens += tokens
        self._outstanding += 1
        return Reservation(usd, tokens)

    def settle(self, reservation: Reservation, usd: float, tokens: int) -> None:
        """Replace a reservation by what the call really cost, and wake waiting calls."""
        self.reserved_usd -= reservation.usd
        self.reserved_tokens -= reservation.tokens
        self._outstanding -= 1
        self.spent_usd += usd
        self.spent_tokens += tokens
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def describe(self) -> str:
        parts = []
        if self.max_usd is not None:
            parts.append(f"${self.spent_usd:.4f} of ${self.max_usd:g} spent")
        if self.max_tokens is not None:
            parts.append(f"{self.spent_tokens} of {self.max_tokens} tokens spent")
        return "budget reached: " + ", ".join(parts or ["no limit"])
