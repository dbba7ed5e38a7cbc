"""The storage interface the engine needs from a result cache, and the stored record.

A cache maps a request key to the raw `Completion` (texts, usage, finish reasons), never a
grade: grades are recomputed from the stored text on every read, so a grading fix takes
effect on all stored outputs at once and nothing has to be invalidated. Failures are never
stored, because only a `Completion` can be.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from ..providers.types import Completion, Usage


class ResultCache(Protocol):
    def get(self, key: str) -> Completion | None: ...

    def set(self, key: str, completion: Completion) -> None: ...

    def close(self) -> None: ...


def encode(completion: Completion) -> bytes:
    """JSON bytes for a completion (the rate-limit headers are transient and dropped)."""
    record: dict[str, Any] = {
        "texts": completion.texts,
        "in": completion.usage.input_tokens,
        "out": completion.usage.output_tokens,
        "finish": completion.finish_reasons,
    }
    return orjson.dumps(record)


def decode(blob: bytes | str) -> Completion:
    record = orjson.loads(blob)
    return Completion(
        texts=tuple(record["texts"]),
        usage=Usage(record["in"], record["out"]),
        finish_reasons=tuple(record.get("finish", ())),
    )
