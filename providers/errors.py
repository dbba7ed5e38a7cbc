"""The one exception tree for everything that can go wrong in a model call.

    ProviderError                   base; `.status` is the HTTP status when there was one
    ├── RateLimitError              429 / quota: retried after `.retry_after` seconds
    ├── TransientError              5xx, timeouts, dropped connections, unreadable bodies:
    │                               retried with backoff
    └── FatalError                  never retried
        ├── AuthenticationError     401 / 403: the key is missing, wrong or not allowed
        ├── BadRequestError         400 / 404 / 413 / 422: the request itself is wrong
        └── ConfigurationError      unknown provider, missing key or base URL

Providers translate their vendor's failures into these classes (they know the vendor's
error shapes); the engine only looks at the class to decide whether to retry. Messages
must never contain credentials.
"""

from __future__ import annotations

from opro.errors import OproError


class ProviderError(OproError):
    """Base class; `retryable` tells the engine whether another attempt can help."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class RateLimitError(ProviderError):
    retryable = True

    def __init__(
        self, message: str, *, status: int | None = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class TransientError(ProviderError):
    retryable = True


class FatalError(ProviderError):
    retryable = False


class AuthenticationError(FatalError):
    pass


class BadRequestError(FatalError):
    pass


class ConfigurationError(FatalError):
    pass
