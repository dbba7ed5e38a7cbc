"""Loopback fake of OpenAI's Batch API (files, batches, results), over real HTTP.

`FakeOpenAIBatchServer` is the live fake (`fake_openai`) plus the batch endpoints: multipart
`POST /v1/files`, `POST /v1/batches`, `GET /v1/batches[/{id}]`, `POST /v1/batches/{id}/cancel`,
`GET /v1/files/{id}/content`. Each batch advances one state per poll (validating ->
in_progress -> completed) unless `BatchControl` says otherwise: `hold` keeps batches in
progress, `outcome` (or `outcomes`, one per batch in create order) ends them expired, cancelled
or failed at validation, `answer_first`
answers only that many requests before such an end, `fail_every`/`fail_status` make every
k-th request fail with that HTTP status, `fail_polls` answers the next polls 503, and
`hang_create` creates a batch but never answers
the create (the window a kill -9 must survive). Answers are the live fake's (same responder,
same usage) and their tokens are counted in `batch_billed_*`: the tokens the vendor bills at
the batch rate. `creates` counts batches created, so tests can prove none was paid twice.

Run ``python -m opro.testing.fake_openai_batch`` to serve from a subprocess (``READY <url>``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from opro.testing.fake_openai import (
    FakeOpenAIServer,
    ParsedRequest,
    _error,
    _parse,
    json_response,
    serve_until_signalled,
)

OUTCOMES = ("complete", "expire", "cancel", "fail_validation")


@dataclass
class BatchControl:
    """How the fake's batches behave; read on every poll, so tests may change it."""

    hold: bool = False
    outcome: str = "complete"
    outcomes: list[str] = field(default_factory=list)  # per batch in create order, then outcome
    answer_first: int | None = None  # with expire/cancel: requests answered before the end
    fail_every: int = 0  # every k-th request of a batch (1-based) fails with fail_status
    fail_status: int = 400
    hang_create: bool = False
    fail_polls: int = 0  # the next this many polls answer 503 (a transient server error)


@dataclass
class FakeBatch:
    """One batch as the fake keeps it."""

    id: str
    lines: list[dict[str, Any]]
    metadata: dict[str, Any]
    created_at: int
    status: str = "validating"
    outcome: str = "complete"
    output: list[bytes] = field(default_factory=list)
    errors: list[bytes] = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    cancel_requested: bool = False


class BatchCounters:
    """What tests count on a batch fake (mixed into both vendors' fakes)."""

    def reset_batch_stats(self) -> None:
        self.creates = 0
        self.polls = 0
        self.cancels = 0
        self.lists = 0
        self.batch_billed_prompt_tokens = 0
        self.batch_billed_completion_tokens = 0
        self.created = asyncio.Event()
        self.polled = asyncio.Event()
        self.release_create = asyncio.Event()


class FakeOpenAIBatchServer(FakeOpenAIServer, BatchCounters):
    """The fake OpenAI server with the Batch API (see the module docstring)."""

    def __init__(self, *args: Any, control: BatchControl | None = None, **kwargs: Any) -> None:
        self.control = control or BatchControl()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, FakeBatch] = {}
        self._next = 0
        super().__init__(*args, **kwargs)
        self.reset_batch_stats()

    def _id(self, prefix: str) -> str:
        self._next += 1
        return f"{prefix}_fake{self._next:04d}"

    def _add_routes(self, app: web.Application) -> None:
        super()._add_routes(app)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list)
        app.router.add_get("/v1/batches/{id}", self._retrieve)
        app.router.add_post("/v1/batches/{id}/cancel", self._cancel)

    async def stop(self) -> None:
        self.release_create.set()
        await super().stop()

    async def __aenter__(self) -> FakeOpenAIBatchServer:
        await self.start()
        return self

    # -- handlers ------------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized()
        form = await request.post()
        upload = form.get("file")
        if form.get("purpose") != "batch" or not isinstance(upload, web.FileField):
            return _error(400, "purpose must be batch, with a file", "invalid_request_error", None)
        file_id = self._id("file")
        self.files[file_id] = upload.file.read()
        return json_response(200, {"id": file_id, "object": "file", "purpose": "batch"})

    async def _content(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized()
        data = self.files.get(request.match_info["id"])
        if data is None:
            return _error(404, "No such file", "invalid_request_error", None)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _create(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized()
        body: Any = orjson.loads(await request.read())
        raw = self.files.get(body.get("input_file_id", "")) if isinstance(body, dict) else None
        if raw is None or body.get("completion_window") != "24h":
            return _error(400, "bad input_file_id or window", "invalid_request_error", None)
        lines = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
        batch = FakeBatch(
            self._id("batch"), lines, dict(body.get("metadata") or {}), int(time.time())
        )
        batch.outcome = self._outcome()
        self.batches[batch.id] = batch
        self.creates += 1
        self.created.set()
        if self.control.hang_create:
            await self.release_create.wait()
            raise web.HTTPServiceUnavailable()
        return json_response(200, self._view(batch))

    async def _list(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized()
        self.lists += 1
        limit = int(request.query.get("limit", "20"))
        newest = sorted(self.batches.values(), key=lambda b: b.id, reverse=True)
        after = request.query.get("after")
        if after is not None:
            ids = [b.id for b in newest]
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        page = newest[:limit]
        return json_response(
            200,
            {
                "object": "list",
                "data": [self._view(b) for b in page],
                "has_more": len(newest) > limit,
            },
        )

    async def _retrieve(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized()
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "No such batch", "invalid_request_error", None)
        self.polls += 1
        if self.control.fail_polls > 0:
            self.control.fail_polls -= 1
            return _error(503, "The server is overloaded.", "server_error", None)
        self._advance(batch)
        self.polled.set()
        return json_response(200, self._view(batch))

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized()
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "No such batch", "invalid_request_error", None)
        self.cancels += 1
        if batch.status in ("validating", "in_progress"):
            batch.status = "cancelling"
        return json_response(200, self._view(batch))

    # -- the state machine -------------------------------------------------------------------

    def _outcome(self) -> str:
        c = self.control
        outcome = c.outcomes.pop(0) if c.outcomes else c.outcome
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown batch outcome {outcome!r}; expected one of {OUTCOMES}")
        return outcome

    def _advance(self, batch: FakeBatch) -> None:
        c = self.control
        if batch.status == "validating":
            if batch.outcome == "fail_validation":
                batch.status = "failed"
            else:
                batch.status = "in_progress"
        elif batch.status == "cancelling":
            self._finish(batch, "cancelled", "batch_cancelled", c.answer_first or 0)
        elif batch.status == "in_progress" and not c.hold:
            if batch.outcome == "expire":
                self._finish(batch, "expired", "batch_expired", c.answer_first or 0)
            elif batch.outcome == "cancel":
                batch.status = "cancelling"
            else:
                self._finish(batch, "completed", "", len(batch.lines))

    def _finish(self, batch: FakeBatch, status: str, code: str, answered: int) -> None:
        for i, line in enumerate(batch.lines):
            custom_id = line.get("custom_id")
            if i >= answered:
                error = {"code": code, "message": f"This request was not run ({code})."}
                self._error_line(batch, custom_id, None, error)
            elif self.control.fail_every and (i + 1) % self.control.fail_every == 0:
                status_code = self.control.fail_status
                body = {"error": {"message": "Injected failure.", "type": "server_error"}}
                self._error_line(batch, custom_id, {"status_code": status_code, "body": body})
            else:
                req = _parse(line.get("body"), line.get("url") == "/v1/chat/completions")
                assert isinstance(req, ParsedRequest)
                before = (self.billed_prompt_tokens, self.billed_completion_tokens)
                payload = self._answer(req, line.get("url") == "/v1/chat/completions")
                self.batch_billed_prompt_tokens += self.billed_prompt_tokens - before[0]
                self.batch_billed_completion_tokens += self.billed_completion_tokens - before[1]
                response = {"status_code": 200, "request_id": f"req_{i}", "body": payload}
                batch.output.append(
                    orjson.dumps(
                        {
                            "id": f"br_{i}",
                            "custom_id": custom_id,
                            "response": response,
                            "error": None,
                        }
                    )
                )
                batch.completed += 1
        batch.status = status
        if batch.output:
            batch.output_file_id = self._id("file")
            self.files[batch.output_file_id] = b"\n".join(batch.output) + b"\n"
        if batch.errors:
            batch.error_file_id = self._id("file")
            self.files[batch.error_file_id] = b"\n".join(batch.errors) + b"\n"

    def _error_line(
        self,
        batch: FakeBatch,
        custom_id: Any,
        response: dict[str, Any] | None,
        error: dict[str, Any] | None = None,
    ) -> None:
        line = {"id": "br_err", "custom_id": custom_id, "response": response, "error": error}
        batch.errors.append(orjson.dumps(line))
        batch.failed += 1

    def _view(self, batch: FakeBatch) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": batch.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "status": batch.status,
            "created_at": batch.created_at,
            "completion_window": "24h",
            "metadata": batch.metadata,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "request_counts": {
                "total": len(batch.lines),
                "completed": batch.completed,
                "failed": batch.failed,
            },
            "errors": None,
        }
        if batch.status == "failed":
            error = {"code": "invalid_request", "message": "Injected validation failure."}
            view["errors"] = {"object": "list", "data": [error]}
        return view


async def _serve(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Serve a fake OpenAI Batch API on loopback.")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    return await serve_until_signalled(FakeOpenAIBatchServer(port=args.port))


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(_serve(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
