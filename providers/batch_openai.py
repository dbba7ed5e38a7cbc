"""OpenAI's Batch API: JSONL upload, batch create/retrieve/list/cancel, result files.

Wire format (platform.openai.com/docs/api-reference/batch, checked 2026-12): the input file
is JSONL, one `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}` per
line, uploaded as multipart to `POST /files` with `purpose=batch` (at most 50,000 requests
and 200 MB per file); `POST /batches {input_file_id, endpoint, completion_window: "24h",
metadata}` creates the batch; `GET /batches/{id}` reports `status` (validating, in_progress,
finalizing, completed, failed, expired, cancelling, cancelled), `request_counts`,
`output_file_id` and `error_file_id`; `GET /files/{id}/content` returns JSONL lines
`{"id", "custom_id", "response": {"status_code", "body"}, "error"}`. The write-ahead token
travels as `metadata.opro_token`, so `GET /batches` (newest first) finds a batch whose
creation a crashed session never recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

from opro.providers.batch import BatchApi, BatchState, Intent, ItemResult, Limits, Phase
from opro.providers.errors import BadRequestError, ProviderError, TransientError
from opro.providers.http import classify_status
from opro.providers.openai import OpenAIProvider
from opro.providers.types import Request

TOKEN_KEY = "opro_token"
_PHASES: dict[str, Phase] = {
    "validating": "running",
    "in_progress": "running",
    "finalizing": "running",
    "cancelling": "running",
    "completed": "ended",
    "expired": "ended",
    "cancelled": "ended",
    "failed": "failed",
}
# Per-request error codes that another attempt can fix (the batch ran out of time or was
# cancelled before reaching the request).
_RETRYABLE_CODES = frozenset({"batch_expired", "batch_cancelled"})
LIST_PAGES = 20  # how far back `find` looks (100 batches a page)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class OpenAIBatchApi(BatchApi):
    """The Batch API of the server an `OpenAIProvider` talks to."""

    limits = Limits(max_requests=50_000, max_bytes=200 * 1024 * 1024)
    provider: OpenAIProvider

    def __init__(self, provider: OpenAIProvider) -> None:
        super().__init__(provider)
        self.endpoint = "/v1/chat/completions" if provider.api == "chat" else "/v1/completions"

    def line(self, custom_id: str, request: Request) -> bytes:
        body = self.provider._body(request)
        return orjson.dumps(
            {"custom_id": custom_id, "method": "POST", "url": self.endpoint, "body": body}
        )

    async def submit(self, lines: Sequence[bytes], token: str) -> str:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field(
            "file",
            b"\n".join(lines) + b"\n",
            filename=f"opro-{token}.jsonl",
            content_type="application/jsonl",
        )
        uploaded = _json(await self.send("POST", "/files", data=form), self.where)
        file_id = uploaded.get("id")
        if not isinstance(file_id, str):
            raise TransientError(f"{self.where}: file upload answered without an id")
        created = _json(
            await self.send(
                "POST",
                "/batches",
                json={
                    "input_file_id": file_id,
                    "endpoint": self.endpoint,
                    "completion_window": "24h",
                    "metadata": {TOKEN_KEY: token},
                },
            ),
            self.where,
        )
        batch_id = created.get("id")
        if not isinstance(batch_id, str):
            raise TransientError(f"{self.where}: batch create answered without an id")
        return batch_id

    async def find(self, intent: Intent) -> str | None:
        after: str | None = None
        for _ in range(LIST_PAGES):
            query = {"limit": "100", **({"after": after} if after else {})}
            page = _json(await self.send("GET", "/batches", query=query), self.where)
            data = page.get("data")
            if not isinstance(data, list) or not data:
                return None
            for batch in data:
                if not isinstance(batch, dict):
                    continue
                meta = batch.get("metadata")
                if isinstance(meta, dict) and meta.get(TOKEN_KEY) == intent.token:
                    found = batch.get("id")
                    return found if isinstance(found, str) else None
            oldest = data[-1].get("created_at") if isinstance(data[-1], dict) else None
            if isinstance(oldest, int | float) and oldest < intent.created_after:
                return None  # the list is newest first: ours cannot be further back
            if not page.get("has_more"):
                return None
            last = data[-1].get("id") if isinstance(data[-1], dict) else None
            after = last if isinstance(last, str) else None
            if after is None:
                return None
        return None

    async def _batch(self, batch_id: str) -> dict[str, Any]:
        return _json(await self.send("GET", f"/batches/{batch_id}"), self.where)

    async def state(self, batch_id: str) -> BatchState:
        batch = await self._batch(batch_id)
        status = batch.get("status")
        phase = _PHASES.get(status) if isinstance(status, str) else None
        if phase is None:
            raise TransientError(f"{self.where}: batch {batch_id} has unknown status {status!r}")
        counts = batch.get("request_counts")
        counts = counts if isinstance(counts, dict) else {}
        done = _count(counts.get("completed")) + _count(counts.get("failed"))
        message = ""
        if phase == "failed":
            errors = batch.get("errors")
            data = errors.get("data") if isinstance(errors, dict) else None
            texts = [
                str(e.get("message") or e.get("code"))
                for e in (data if isinstance(data, list) else [])
                if isinstance(e, dict)
            ]
            message = "; ".join(texts[:3]) or "no reason given"
        return BatchState(
            batch_id, str(status), phase, done, _count(counts.get("total")), message[:300]
        )

    async def results(self, batch_id: str) -> list[ItemResult]:
        batch = await self._batch(batch_id)
        out: list[ItemResult] = []
        for name in ("output_file_id", "error_file_id"):
            file_id = batch.get(name)
            if isinstance(file_id, str) and file_id:
                raw = await self.send("GET", f"/files/{file_id}/content")
                out.extend(self._item(line) for line in raw.body.splitlines() if line.strip())
        return out

    async def cancel(self, batch_id: str) -> None:
        await self.send("POST", f"/batches/{batch_id}/cancel")

    def _item(self, line: bytes) -> ItemResult:
        try:
            data: Any = orjson.loads(line)
        except orjson.JSONDecodeError:
            data = None
        custom_id = data.get("custom_id") if isinstance(data, dict) else None
        if not isinstance(custom_id, str):
            return ItemResult("", error=TransientError(f"{self.where}: unreadable result line"))
        response = data.get("response")
        if isinstance(response, dict) and response.get("status_code") == 200:
            body = orjson.dumps(response.get("body"))
            try:
                return ItemResult(custom_id, self.provider._parse(body, self.where))
            except ProviderError as err:  # a broken 200: generated, so billed
                return ItemResult(custom_id, error=err, billed=True)
        if isinstance(response, dict) and isinstance(response.get("status_code"), int):
            body = orjson.dumps(response.get("body"))
            return ItemResult(
                custom_id,
                error=classify_status(response["status_code"], body, {}, where=self.where),
            )
        error = data.get("error")
        code = str(error.get("code") or "") if isinstance(error, dict) else ""
        text = str(error.get("message") or code) if isinstance(error, dict) else "no result"
        message = f"{self.where}: batch request failed: {text[:300]}"
        if code in _RETRYABLE_CODES:
            return ItemResult(custom_id, error=TransientError(message))
        return ItemResult(custom_id, error=BadRequestError(message))


def _json(raw: Any, where: str) -> dict[str, Any]:
    try:
        data = orjson.loads(raw.body)
    except orjson.JSONDecodeError as exc:
        raise TransientError(f"{where}: answer is not valid JSON") from exc
    if not isinstance(data, dict):
        raise TransientError(f"{where}: answer is not a JSON object")
    return data
