"""Loopback fake of Anthropic's Message Batches API, over real HTTP.

`FakeAnthropicBatchServer` is the live fake (`fake_anthropic`) plus `POST/GET
/v1/messages/batches`, `GET /v1/messages/batches/{id}[/results]` and `POST .../cancel`. It
shares `BatchControl` with the OpenAI batch fake: a batch moves in_progress -> ended on a
poll unless `hold`; `outcome` "expire"/"cancel" ends it with the requests after
`answer_first` expired or canceled; `fail_every`/`fail_status` make every k-th request
`errored` (400: invalid_request_error, else api_error). Answers and usage are the live
fake's; their tokens are counted in `batch_billed_*`. There is no validation failure of a
whole batch: Anthropic reports bad requests one by one.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from opro.testing.fake_anthropic import FakeAnthropicServer, _validate
from opro.testing.fake_openai import json_response
from opro.testing.fake_openai_batch import BatchControl, BatchCounters, FakeBatch

PATH = "/v1/messages/batches"


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


class FakeAnthropicBatchServer(FakeAnthropicServer, BatchCounters):
    """The fake Anthropic server with Message Batches (see the module docstring)."""

    def __init__(self, *args: Any, control: BatchControl | None = None, **kwargs: Any) -> None:
        self.control = control or BatchControl()
        self.batches: dict[str, FakeBatch] = {}
        self.results: dict[str, list[bytes]] = {}
        self._next = 0
        super().__init__(*args, **kwargs)
        self.reset_batch_stats()

    def _add_routes(self, app: web.Application) -> None:
        super()._add_routes(app)
        app.router.add_post(PATH, self._create)
        app.router.add_get(PATH, self._list)
        app.router.add_get(PATH + "/{id}", self._retrieve)
        app.router.add_get(PATH + "/{id}/results", self._results)
        app.router.add_post(PATH + "/{id}/cancel", self._cancel)

    async def __aenter__(self) -> FakeAnthropicBatchServer:
        await self.start()
        return self

    async def stop(self) -> None:
        self.release_create.set()
        await super().stop()

    async def _create(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized()
        body: Any = orjson.loads(await request.read())
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return self._error(400, "invalid_request_error", "requests: must be a non-empty list")
        self._next += 1
        batch = FakeBatch(f"msgbatch_fake{self._next:04d}", requests, {}, int(time.time()))
        c = self.control
        batch.outcome = c.outcomes.pop(0) if c.outcomes else c.outcome
        batch.status = "in_progress"
        self.batches[batch.id] = batch
        self.creates += 1
        self.created.set()
        if c.hang_create:
            await self.release_create.wait()
            raise web.HTTPServiceUnavailable()
        return json_response(200, self._view(batch))

    async def _list(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized()
        self.lists += 1
        newest = sorted(self.batches.values(), key=lambda b: b.id, reverse=True)
        data = [self._view(b) for b in newest]
        return json_response(
            200,
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
        )

    async def _retrieve(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized()
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return self._error(404, "not_found_error", "No such batch")
        self.polls += 1
        self._advance(batch)
        self.polled.set()
        return json_response(200, self._view(batch))

    async def _results(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized()
        lines = self.results.get(request.match_info["id"])
        if lines is None:
            return self._error(404, "not_found_error", "Batch has not ended")
        return web.Response(body=b"\n".join(lines) + b"\n", content_type="application/x-jsonl")

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized()
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return self._error(404, "not_found_error", "No such batch")
        self.cancels += 1
        if batch.status == "in_progress":
            batch.status = "canceling"
        return json_response(200, self._view(batch))

    def _advance(self, batch: FakeBatch) -> None:
        c = self.control
        if batch.status == "canceling":
            self._finish(batch, "canceled", c.answer_first or 0)
        elif batch.status == "in_progress" and not c.hold:
            if batch.outcome == "cancel":
                batch.status = "canceling"
            elif batch.outcome == "expire":
                self._finish(batch, "expired", c.answer_first or 0)
            else:
                self._finish(batch, "", len(batch.lines))

    def _finish(self, batch: FakeBatch, missed: str, answered: int) -> None:
        out: list[bytes] = []
        for i, line in enumerate(batch.lines):
            result: dict[str, Any]
            if i >= answered:
                result = {"type": missed}
            elif self.control.fail_every and (i + 1) % self.control.fail_every == 0:
                type_ = "invalid_request_error" if self.control.fail_status == 400 else "api_error"
                error = {"type": type_, "message": "Injected failure."}
                result = {"type": "errored", "error": {"type": "error", "error": error}}
            else:
                checked = _validate(line.get("params"))
                assert not isinstance(checked, str), checked
                before = (self.billed_prompt_tokens, self.billed_completion_tokens)
                message = self._message(*checked)
                self.batch_billed_prompt_tokens += self.billed_prompt_tokens - before[0]
                self.batch_billed_completion_tokens += self.billed_completion_tokens - before[1]
                result = {"type": "succeeded", "message": message}
            out.append(orjson.dumps({"custom_id": line.get("custom_id"), "result": result}))
            batch.completed += result["type"] == "succeeded"
            batch.failed += result["type"] != "succeeded"
        self.results[batch.id] = out
        batch.status = "ended"

    def _view(self, batch: FakeBatch) -> dict[str, Any]:
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if batch.status == "ended":
            for line in self.results[batch.id]:
                kind = orjson.loads(line)["result"]["type"]
                counts[kind] += 1
        else:
            counts["processing"] = len(batch.lines)
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.status,
            "request_counts": counts,
            "created_at": _stamp(batch.created_at),
            "ended_at": None,
            "results_url": (
                f"{self.base_url}{PATH}/{batch.id}/results" if batch.status == "ended" else None
            ),
        }
