"""`batches.json` in the run directory: which vendor batches a run has, written ahead.

A session writes an entry (`status: "intent"`, a fresh random `token`, the cache keys it
will submit and the worst case it reserved) BEFORE it creates the batch, and the same token
goes to the vendor (OpenAI: batch metadata). It then records the batch id (`"submitted"`),
and `"collected"` once every result is in the cache. A kill -9 at any point leaves a file
that a resumed session can act on: an intent without an id is looked up at the vendor by
its token (found: adopted; not found: it was never created), a submitted batch is polled
again, a collected one is done. No batch is ever submitted twice. The file is replaced
atomically (temporary file, fsync, rename), like the spend ledger::

    {"format": 1, "batches": [{"token", "spec", "status", "batch_id", "keys",
                               "worst": {spend}, "created_after", "round"}]}
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from opro.engine.spend import Spend
from opro.errors import OproError

STATE_FILE = "batches.json"
FORMAT = 1
Status = Literal["intent", "submitted", "collected", "abandoned"]
_STATUSES = ("intent", "submitted", "collected", "abandoned")


class BatchStateError(OproError):
    """The run's batch state cannot be read or written; the message says what to do."""


@dataclass(slots=True)
class BatchEntry:
    """One batch of a run (see the module docstring)."""

    token: str
    spec: str
    keys: list[str]
    worst: Spend
    status: Status = "intent"
    batch_id: str | None = None
    created_after: float = field(default_factory=lambda: time.time() - 60.0)
    round: int = 1

    @classmethod
    def new(cls, spec: str, keys: list[str], worst: Spend, round_: int) -> BatchEntry:
        return cls(secrets.token_hex(12), spec, keys, worst, round=round_)

    def to_dict(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "spec": self.spec,
            "status": self.status,
            "batch_id": self.batch_id,
            "keys": self.keys,
            "worst": self.worst.to_dict(),
            "created_after": self.created_after,
            "round": self.round,
        }

    @classmethod
    def from_dict(cls, data: Any) -> BatchEntry | None:
        if not isinstance(data, dict):
            return None
        worst = Spend.from_dict(data.get("worst"))
        keys = data.get("keys")
        fields = (data.get("token"), data.get("spec"), data.get("status"))
        batch_id = data.get("batch_id")
        after = data.get("created_after")
        round_ = data.get("round", 1)
        if (
            worst is None
            or not isinstance(keys, list)
            or not all(isinstance(k, str) for k in keys)
            or not all(isinstance(f, str) for f in fields)
            or fields[2] not in _STATUSES
            or not (batch_id is None or isinstance(batch_id, str))
            or not isinstance(after, int | float)
            or isinstance(after, bool)
            or not isinstance(round_, int)
        ):
            return None
        return cls(
            str(fields[0]),
            str(fields[1]),
            keys,
            worst,
            fields[2],
            batch_id,
            float(after),
            round_,
        )


class BatchStateFile:
    """`batches.json` of one run directory; every `save` replaces the whole file."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / STATE_FILE

    def load(self) -> list[BatchEntry]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BatchStateError(f"cannot read the run's batch state {self.path}: {exc}") from None
        try:
            data: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        items = data.get("batches") if isinstance(data, dict) else None
        entries = [BatchEntry.from_dict(e) for e in items] if isinstance(items, list) else None
        if not isinstance(data, dict) or data.get("format") != FORMAT or entries is None:
            entries = None
        if entries is None or any(e is None for e in entries):
            raise BatchStateError(
                f"the run's batch state {self.path} is damaged, so batches it submitted could "
                "be paid twice; restore it, or move it aside to submit afresh"
            )
        return [e for e in entries if e is not None]

    def save(self, entries: list[BatchEntry]) -> None:
        data = orjson.dumps({"format": FORMAT, "batches": [e.to_dict() for e in entries]})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise BatchStateError(
                f"cannot record the run's batch state in {self.path}: {exc}; nothing was "
                "submitted that is not recorded"
            ) from None
