"""Anthropic's Message Batches API: create, retrieve, list, results, cancel.

Wire format (docs.claude.com/en/api/creating-message-batches and neighbours, checked
2026-12): `POST /v1/messages/batches {"requests": [{"custom_id", "params"}]}` where `params`
is a Messages API body (at most 100,000 requests or 256 MB per batch; custom_id matches
`^[a-zA-Z0-9_-]{1,64}$`, which a 64-hex-digit cache key does); `GET
/v1/messages/batches/{id}` reports `processing_status` (in_progress, canceling, ended) and
`request_counts` (processing, succeeded, errored, canceled, expired); `GET .../{id}/results`
streams JSONL `{"custom_id", "result": {"type": "succeeded"|"errored"|"canceled"|"expired",
"message"|"error"}}`; `POST .../{id}/cancel`. Results are fetched under our own base URL,
never from the `results_url` host a server names (the key goes wherever we send).

The API takes no metadata, so the write-ahead token cannot travel with the batch: `find`
adopts the one batch created after the intent with the intent's request count, and gives
up (a new batch is submitted) when none or several match.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from opro.providers.anthropic import AnthropicProvider
from opro.providers.batch import BatchApi, BatchState, Intent, ItemResult, Limits, Phase
from opro.providers.errors import BadRequestError, ProviderError, TransientError
from opro.providers.types import Completion, Usage

log = logging.getLogger("opro.batch")
PATH = "/v1/messages/batches"
_FATAL_TYPES = frozenset(
    {"invalid_request_error", "authentication_error", "permission_error", "not_found_error"}
)
_COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")
LIST_PAGES = 20


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _epoch(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


class AnthropicBatchApi(BatchApi):
    """The Message Batches API of the server an `AnthropicProvider` talks to."""

    limits = Limits(max_requests=100_000, max_bytes=256 * 1000 * 1000)
    provider: AnthropicProvider

    def line(self, custom_id: str, request: Any) -> bytes:
        return orjson.dumps({"custom_id": custom_id, "params": self.provider.body(request)})

    async def submit(self, lines: Sequence[bytes], token: str) -> str:
        requests = [orjson.loads(line) for line in lines]
        created = _json(await self.send("POST", PATH, json={"requests": requests}), self.where)
        batch_id = created.get("id")
        if not isinstance(batch_id, str):
            raise TransientError(f"{self.where}: batch create answered without an id")
        return batch_id

    async def find(self, intent: Intent) -> str | None:
        matches: list[str] = []
        after: str | None = None
        for _ in range(LIST_PAGES):
            query = {"limit": "100", **({"after_id": after} if after else {})}
            page = _json(await self.send("GET", PATH, query=query), self.where)
            data = page.get("data")
            if not isinstance(data, list) or not data:
                break
            older = False
            for batch in data:
                if not isinstance(batch, dict):
                    continue
                created = _epoch(batch.get("created_at"))
                if created is None or created < intent.created_after:
                    older = True
                    continue
                counts = batch.get("request_counts")
                total = (
                    sum(_count(counts.get(n)) for n in _COUNTS) if isinstance(counts, dict) else 0
                )
                if total == intent.n_requests and isinstance(batch.get("id"), str):
                    matches.append(batch["id"])
            last = page.get("last_id")
            if older or not page.get("has_more") or not isinstance(last, str):
                break
            after = last
        if len(matches) > 1:
            log.warning(
                "%s: %d batches could be the one a crashed session created; none adopted",
                self.where,
                len(matches),
            )
        return matches[0] if len(matches) == 1 else None

    async def state(self, batch_id: str) -> BatchState:
        batch = _json(await self.send("GET", f"{PATH}/{batch_id}"), self.where)
        status = batch.get("processing_status")
        if status not in ("in_progress", "canceling", "ended"):
            raise TransientError(f"{self.where}: batch {batch_id} has unknown status {status!r}")
        counts = batch.get("request_counts")
        counts = counts if isinstance(counts, dict) else {}
        total = sum(_count(counts.get(n)) for n in _COUNTS)
        done = total - _count(counts.get("processing"))
        phase: Phase = "ended" if status == "ended" else "running"
        return BatchState(batch_id, str(status), phase, done, total)

    async def results(self, batch_id: str) -> list[ItemResult]:
        raw = await self.send("GET", f"{PATH}/{batch_id}/results")
        return [self._item(line) for line in raw.body.splitlines() if line.strip()]

    async def cancel(self, batch_id: str) -> None:
        await self.send("POST", f"{PATH}/{batch_id}/cancel")

    def _item(self, line: bytes) -> ItemResult:
        try:
            data: Any = orjson.loads(line)
        except orjson.JSONDecodeError:
            data = None
        custom_id = data.get("custom_id") if isinstance(data, dict) else None
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(custom_id, str) or not isinstance(result, dict):
            return ItemResult("", error=TransientError(f"{self.where}: unreadable result line"))
        kind = result.get("type")
        if kind == "succeeded":
            try:
                text, finish, usage = AnthropicProvider._parse(
                    orjson.dumps(result.get("message")), self.where
                )
            except ProviderError as broken:  # a broken answer: generated, so billed
                return ItemResult(custom_id, error=broken, billed=True)
            completion = Completion(
                texts=(text,),
                usage=usage or Usage(),
                finish_reasons=(finish,),
                usage_known=usage is not None,
            )
            return ItemResult(custom_id, completion)
        if kind == "errored":
            outer = result.get("error")
            inner = outer.get("error") if isinstance(outer, dict) else None
            err = inner if isinstance(inner, dict) else outer if isinstance(outer, dict) else {}
            type_ = str(err.get("type") or "")
            message = (
                f"{self.where}: batch request failed: {str(err.get('message') or type_)[:300]}"
            )
            if type_ in _FATAL_TYPES:
                return ItemResult(custom_id, error=BadRequestError(message))
            return ItemResult(custom_id, error=TransientError(message))
        reason = kind if isinstance(kind, str) else "no result"
        return ItemResult(custom_id, error=TransientError(f"{self.where}: batch request {reason}"))


def _json(raw: Any, where: str) -> dict[str, Any]:
    try:
        data = orjson.loads(raw.body)
    except orjson.JSONDecodeError as exc:
        raise TransientError(f"{where}: answer is not valid JSON") from exc
    if not isinstance(data, dict):
        raise TransientError(f"{where}: answer is not a JSON object")
    return data
