"""Capacity sources: where a connection's request and token rate comes from when it is
shared beyond this process.

A `ConnectionLimiter` normally enforces its requests/minute and tokens/minute itself. When
an engine is given a `CapacityFactory` (a sweep on a Ray cluster does this, see
`opro.cluster`), every limiter with a rate asks it for a `CapacitySource`; if one is
returned, the limiter takes each call's request and tokens from it instead of from its own
rate limiters (concurrency, 429 cool-downs and priorities stay local). Without a factory
nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from opro.engine.limits import LimitConfig


class CapacitySource(Protocol):
    """A share of a connection's rate: `take` returns once one request carrying `tokens`
    (its expected tokens, 0 when no token rate applies) may be sent."""

    async def take(self, tokens: int) -> None: ...


# (connection key, the connection's limits) -> a source, or None to limit locally.
CapacityFactory = Callable[[str, LimitConfig], CapacitySource | None]
