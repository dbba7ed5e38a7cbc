"""When and how long to wait before trying a failed call again.

The provider classifies a failure; this policy turns the class into a decision. Rate
limits wait as long as the server asked (plus a little jitter so a crowd of waiters does
not return in lockstep); other retryable failures back off exponentially with jitter;
fatal ones are never retried.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from opro.checks import ATTEMPTS, DELAY_SECONDS, SECONDS
from opro.providers.errors import ProviderError, RateLimitError

DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_TIMEOUT_S = 120.0
# The longest wait a server may ask for before the engine gives up instead (a daily quota,
# not a burst); `ConnectionLimiter` caps its connection-wide pause at the same value.
DEFAULT_MAX_RETRY_AFTER_S = 600.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`max_attempts` counts the first try; delays are in seconds."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    base_delay: float = 0.5
    max_delay: float = 60.0
    timeout: float = DEFAULT_TIMEOUT_S
    # A server asking for a longer pause than this (a daily quota) is not waited out.
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER_S

    def __post_init__(self) -> None:
        ATTEMPTS.check("max attempts", self.max_attempts)
        DELAY_SECONDS.check("the base retry delay", self.base_delay)
        DELAY_SECONDS.check("the maximum retry delay", self.max_delay)
        SECONDS.check("the timeout (seconds)", self.timeout)
        DELAY_SECONDS.check("the longest Retry-After waited out", self.max_retry_after)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Delay after the `attempt`-th failure (1-based): equal jitter over 2**attempt."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)

    def delay(self, error: ProviderError, attempt: int, rng: random.Random) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            return error.retry_after + rng.uniform(0, 0.05)
        return self.backoff(attempt, rng)
