"""The vendor batch APIs (OpenAI Batch, Anthropic Message Batches) behind one small interface.

A `BatchApi` wraps a live `HttpProvider` of the same vendor: it reuses its base URL, key,
headers, request bodies and answer parsing, so a batched request is the same request a live
call would send, and its answer becomes the same `Completion`. Data enters as
`(custom_id, Request)` items and a write-ahead `token`; it leaves as a batch id, `BatchState`
snapshots and per-item `ItemResult`s (a `Completion`, or a classified `ProviderError`).
What to submit, when to poll, what to retry and what to charge is the engine's business
(`engine.batch`); this layer only speaks the wire format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from opro.providers.base import HttpProvider, Provider
from opro.providers.errors import ConfigurationError, ProviderError
from opro.providers.http import RawResponse, classify_exception, header_secrets, scrubbed
from opro.providers.types import Completion, Request

# What the engine needs to know about a batch: still running, or over (results readable).
Phase = Literal["running", "ended", "failed"]


@dataclass(frozen=True, slots=True)
class BatchState:
    """One poll's answer. `status` is the vendor's own word (shown in logs); `phase` is what
    the engine acts on; `done`/`total` count requests (for progress lines)."""

    batch_id: str
    status: str
    phase: Phase
    done: int = 0
    total: int = 0
    message: str = ""  # why a batch failed as a whole (validation), for the error line


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One request's outcome: exactly one of `completion` and `error` is set. `billed`: an
    error after the answer was generated (a broken 200), which the vendor charged."""

    custom_id: str
    completion: Completion | None = None
    error: ProviderError | None = None
    billed: bool = False


@dataclass(frozen=True, slots=True)
class Intent:
    """What a session wrote down before creating a batch, so a later one can find it."""

    token: str
    n_requests: int
    created_after: float  # epoch seconds, a little before the create was sent


@dataclass(slots=True)
class Limits:
    """A vendor's per-batch limits (requests and request bytes)."""

    max_requests: int
    max_bytes: int
    notes: list[str] = field(default_factory=list)


class BatchApi:
    """The vendor-neutral part: HTTP helpers over the provider's session and key."""

    limits: Limits

    def __init__(self, provider: HttpProvider) -> None:
        self.provider = provider

    @property
    def where(self) -> str:
        return self.provider.where

    # -- what subclasses implement -----------------------------------------------------------

    def line(self, custom_id: str, request: Request) -> bytes:
        """One request as the vendor's batch input encodes it (sizes decide the split)."""
        raise NotImplementedError

    async def submit(self, lines: Sequence[bytes], token: str) -> str:
        """Create a batch of `lines` carrying `token`; return its id."""
        raise NotImplementedError

    async def find(self, intent: Intent) -> str | None:
        """The id of the batch an earlier session created for `intent`, if the vendor has it."""
        raise NotImplementedError

    async def state(self, batch_id: str) -> BatchState:
        raise NotImplementedError

    async def results(self, batch_id: str) -> list[ItemResult]:
        """Every result the vendor has for an ended batch (missing ones: not answered)."""
        raise NotImplementedError

    async def cancel(self, batch_id: str) -> None:
        raise NotImplementedError

    # -- HTTP --------------------------------------------------------------------------------

    async def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        query: Mapping[str, str] | None = None,
        url: str | None = None,
    ) -> RawResponse:
        """One request under the provider's base URL (or to `url`); failures are classified,
        a non-2xx answer raised as the provider classifies it, messages scrubbed."""
        p = self.provider
        headers = dict(p._headers)
        if data is not None:
            headers.pop("Content-Type", None)  # multipart sets its own boundary
            headers.pop("content-type", None)
        target = url or p._base.join(path)
        try:
            async with p._http.session().request(
                method,
                target,
                json=json,
                data=data,
                params=dict(query) if query else None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=p.timeout),
            ) as resp:
                raw = RawResponse(resp.status, await resp.read(), resp.headers)
        except Exception as exc:
            mapped = classify_exception(exc, where=self.where, timeout=p.timeout)
            if mapped is None:
                raise
            raise scrubbed(mapped, *header_secrets(headers)) from exc
        if raw.status >= 300:
            raise p.failure(raw)
        return raw


def batch_api(provider: Provider) -> BatchApi:
    """The batch API of `provider`'s vendor; a `ConfigurationError` for one that has none."""
    from opro.providers.anthropic import AnthropicProvider
    from opro.providers.openai import OpenAIProvider

    if isinstance(provider, OpenAIProvider):
        from opro.providers.batch_openai import OpenAIBatchApi

        return OpenAIBatchApi(provider)
    if isinstance(provider, AnthropicProvider):
        from opro.providers.batch_anthropic import AnthropicBatchApi

        return AnthropicBatchApi(provider)
    raise ConfigurationError(
        f"--batch needs a scorer with a batch API (openai/, openai-compatible/ with one, "
        f"anthropic/); {provider.spec} has none: drop --batch"
    )
