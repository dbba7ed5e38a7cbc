"""Value types that cross the provider boundary.

A `Request` goes into `Provider.complete()`, a `Completion` comes out. Both are frozen so
that the engine can hash, cache and share them between coroutines without copying.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from opro.checks import TEMPERATURE
from opro.errors import SettingsError

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Request:
    """One model call: either a raw `prompt` (completion models) or chat `messages`.

    Providers convert between the two forms when their API only speaks one of them, so
    callers may pass whichever is natural; the cache key records which one was given.
    """

    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    temperature: float = 0.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise SettingsError("a Request needs exactly one of prompt= or messages=")
        if self.n < 1:
            raise SettingsError(f"n must be >= 1, got {self.n}")
        if self.max_tokens < 1:
            raise SettingsError(f"max_tokens must be >= 1, got {self.max_tokens}")
        TEMPERATURE.check("temperature", self.temperature)  # NaN would be sent as null

    def as_messages(self) -> tuple[Message, ...]:
        if self.messages is not None:
            return self.messages
        assert self.prompt is not None
        return (Message("user", self.prompt),)

    def as_text(self) -> str:
        """The request as one string, for completion-only APIs and token estimates."""
        if self.prompt is not None:
            return self.prompt
        assert self.messages is not None
        return "\n\n".join(m.content for m in self.messages)

    def key_fields(self) -> dict[str, Any]:
        """Everything in the request that can change the model's output (for cache keys)."""
        body: dict[str, Any] = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": list(self.stop),
            "seed": self.seed,
            "n": self.n,
        }
        if self.prompt is not None:
            body["prompt"] = self.prompt
        else:
            assert self.messages is not None
            body["messages"] = [[m.role, m.content] for m in self.messages]
        return body


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What a server said about its limits in response headers (all optional)."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """A model's answer(s). `usage_known` is False when the server's usage report was
    missing or malformed (see `providers.usage`): `usage` is then zero and the engine
    charges the request's worst case instead."""

    texts: tuple[str, ...]
    usage: Usage = field(default_factory=Usage)
    finish_reasons: tuple[str | None, ...] = ()
    rate_limit: RateLimitInfo | None = None
    usage_known: bool = True

    @property
    def text(self) -> str:
        return self.texts[0]
