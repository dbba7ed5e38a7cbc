"""Cache keys: sha256 over canonical JSON of everything that can change a model's answer.

What goes in: the provider's identity (provider/model, API flavour, server for local
endpoints), the full request body as the model sees it (rendered prompt or messages and
the decoding parameters), and a sample index when sampling is random (temperature > 0),
so that the k-th sample of a prompt is stored once and never reused as the (k+1)-th.
What never goes in: retries, timeouts, concurrency, rate limits and credentials.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from opro.providers.types import Request

# Bump when the layout of the keyed payload changes; old entries are then simply missed.
KEY_SCHEMA = 1


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def request_key(identity: dict[str, Any], request: Request, sample: int = 0) -> str:
    """The hex sha256 under which the completion of `request` is stored."""
    payload: dict[str, Any] = {
        "schema": KEY_SCHEMA,
        "provider": identity,
        "request": request.key_fields(),
    }
    if request.temperature > 0:
        payload["sample"] = sample
    return hashlib.sha256(canonical_json(payload)).hexdigest()
