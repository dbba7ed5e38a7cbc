"""Token counts a server reports, checked before they can reach a budget.

A 200 whose `usage` is missing or malformed ("lots", null, negative, a bool, 12.5, 1e300)
still carries a good answer: the server did the work and billed it, we just cannot read
how much. The policy, the same in every provider: keep the answer and mark the usage as
unknown (`Completion.usage_known=False`); the engine then charges the request's worst case
(an upper bound of what a correct server could bill, see `engine.budget`). Retrying instead
would pay a second time for the same answer, and would fail every call against a server
that never reports usage. A count is never negative, never a float that is not a whole
number, never above `MAX_TOKENS_PER_CALL` (no model reads or writes that much in one call,
so a bigger number is garbage, not a bill).
"""

from __future__ import annotations

from typing import Any

from opro.providers.types import Usage

MAX_TOKENS_PER_CALL = 100_000_000


def token_count(value: Any) -> int | None:
    """A reported token count as an int, or None when it is not a plausible count."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not value.is_integer():  # also rejects nan and inf
            return None
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= MAX_TOKENS_PER_CALL:
        return None
    return value


def reported_usage(input_tokens: Any, output_tokens: Any) -> Usage | None:
    """The usage a server reported, or None when either count is unusable."""
    tokens_in, tokens_out = token_count(input_tokens), token_count(output_tokens)
    if tokens_in is None or tokens_out is None:
        return None
    return Usage(tokens_in, tokens_out)
