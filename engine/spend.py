"""`Spend`: what calls cost, the one type the budget, the run ledger and reports add up.

A `Spend` counts attempts sent (`calls`), the tokens they were billed for and the USD
that makes at the model's price. Spends add with `+`, so a run's total is the sum of its
calls' spends, whichever process made them. Every counter that carries these numbers (model
stats, evaluation reports, solution scores, the optimizer's step and run totals) holds a
`Spend` rather than copies of its fields, and converts at the JSON edge with `to_dict()` /
`from_dict()`. The field names are the ones run reports use
(`calls`, `tokens_in`, `tokens_out`, `cost_usd`), so `to_dict()` can be stored as is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from opro.providers.types import Usage


@dataclass(frozen=True, slots=True)
class Spend:
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0

    @classmethod
    def of(cls, usage: Usage, cost_usd: float, calls: int = 1) -> Spend:
        return cls(calls, usage.input_tokens, usage.output_tokens, cost_usd)

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    @property
    def usage(self) -> Usage:
        return Usage(self.tokens_in, self.tokens_out)

    def __add__(self, other: Spend) -> Spend:
        return Spend(
            self.calls + other.calls,
            self.tokens_in + other.tokens_in,
            self.tokens_out + other.tokens_out,
            self.cost_usd + other.cost_usd,
        )

    def __sub__(self, other: Spend) -> Spend:
        return Spend(
            self.calls - other.calls,
            self.tokens_in - other.tokens_in,
            self.tokens_out - other.tokens_out,
            self.cost_usd - other.cost_usd,
        )

    def times(self, k: int) -> Spend:
        return Spend(self.calls * k, self.tokens_in * k, self.tokens_out * k, self.cost_usd * k)

    def covers(self, other: Spend) -> bool:
        """Every field at least `other`'s (USD up to float rounding)."""
        return (
            self.calls >= other.calls
            and self.tokens_in >= other.tokens_in
            and self.tokens_out >= other.tokens_out
            and self.cost_usd >= other.cost_usd - 1e-12 * max(1.0, abs(other.cost_usd))
        )

    def at_least(self, other: Spend) -> Spend:
        """The field-wise maximum of the two."""
        return Spend(
            max(self.calls, other.calls),
            max(self.tokens_in, other.tokens_in),
            max(self.tokens_out, other.tokens_out),
            max(self.cost_usd, other.cost_usd),
        )

    def at_most(self, other: Spend) -> Spend:
        """The field-wise minimum of the two."""
        return Spend(
            min(self.calls, other.calls),
            min(self.tokens_in, other.tokens_in),
            min(self.tokens_out, other.tokens_out),
            min(self.cost_usd, other.cost_usd),
        )

    def valid(self) -> bool:
        """Counts are non-negative and the cost finite and non-negative."""
        return (
            min(self.calls, self.tokens_in, self.tokens_out) >= 0
            and math.isfinite(self.cost_usd)
            and self.cost_usd >= 0
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Spend | None:
        """A `Spend` read back from JSON, or None when `data` is not one."""
        if not isinstance(data, dict):
            return None
        counts = [data.get(name) for name in ("calls", "tokens_in", "tokens_out")]
        cost = data.get("cost_usd")
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            return None
        if not isinstance(cost, int | float) or isinstance(cost, bool):
            return None
        spend = cls(counts[0], counts[1], counts[2], float(cost))  # type: ignore[arg-type]
        return spend if spend.valid() else None


NOTHING = Spend()


class SpendFields:
    """Read-only `calls`, `tokens_in`, `tokens_out`, `cost_usd` of a counter's `spend`.

    Counters that carry a `Spend` beside counts of their own (cache hits, errors) mix this
    in, so `report.totals.calls` reads as it always did while the numbers live in one type.
    """

    __slots__ = ()
    spend: Spend

    @property
    def calls(self) -> int:
        return self.spend.calls

    @property
    def tokens_in(self) -> int:
        return self.spend.tokens_in

    @property
    def tokens_out(self) -> int:
        return self.spend.tokens_out

    @property
    def cost_usd(self) -> float:
        return self.spend.cost_usd
