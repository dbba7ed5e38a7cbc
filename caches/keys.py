"""Cache keys: sha256 over canonical JSON of everything that can change a model's answer.

What goes in: the provider's identity (provider/model, API flavour, server for local
endpoints), the full request body as the model sees it (rendered prompt or messages and
the decoding parameters), and a sample index when sampling is random (temperature > 0),
so that the k-th sample of a prompt is stored once and never reused as the (k+1)-th.
What never goes in: retries, timeouts, concurrency, rate limits and credentials.

`PromptKeys` computes the same keys for requests that differ only in their prompt (the
engine's fan-out) by hashing the canonical JSON around the prompt once: the bytes hashed are
identical, so caches written by either path are read by the other.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import orjson

from opro.providers.types import Request

# Bump when the layout of the keyed payload changes; old entries are then simply missed.
KEY_SCHEMA = 1


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def _payload(identity: dict[str, Any], request: Request, sample: int) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "schema": KEY_SCHEMA,
        "provider": identity,
        "request": request.key_fields(),
    }
    if request.temperature > 0:
        payload["sample"] = sample
    return payload


def request_key(identity: dict[str, Any], request: Request, sample: int = 0) -> str:
    """The hex sha256 under which the completion of `request` is stored."""
    return hashlib.sha256(canonical_json(_payload(identity, request, sample))).hexdigest()


# Stands for the prompt while the shared part of the payload is serialised: a string no
# identity or decoding parameter contains (checked: it must occur exactly once).
_PROMPT_MARK = "\x00opro prompt\x00"


class PromptKeys:
    """`request_key` of `replace(template, prompt=p)` for any prompt `p`, faster.

    Canonical JSON of the payload is `head + json(prompt) + tail`, where `head` and `tail`
    depend only on the identity, the template's decoding parameters and the sample, so the
    hash state after `head` is computed once and copied per prompt.
    """

    __slots__ = ("_head", "_tail")

    def __init__(self, identity: dict[str, Any], template: Request, sample: int = 0) -> None:
        if template.prompt is None:
            raise ValueError("PromptKeys needs a prompt request as its template")
        marked = replace(template, prompt=_PROMPT_MARK)
        whole = canonical_json(_payload(identity, marked, sample))
        mark = orjson.dumps(_PROMPT_MARK)
        head, found, tail = whole.partition(mark)
        if not found or mark in tail:
            raise ValueError("the key payload contains the prompt placeholder elsewhere")
        self._head = hashlib.sha256(head)
        self._tail = tail

    def key(self, prompt: str) -> str:
        digest = self._head.copy()
        digest.update(orjson.dumps(prompt))
        digest.update(self._tail)
        return digest.hexdigest()
