"""Who paid for each result of an ablation, so the report can say what sharing saved, exactly.

Every arm of an ablation calls the engine through its own `ArmModel`: the same provider,
connection limiter, single-flight table, budget and cache as the sweep's model of that role,
but counters of its own and an `ArmCache` view of the cache. The view records, in `Sharing`,
which arm paid for every result it stores (`set` runs only after a call was paid), and counts
a request as *saved by sharing* when it is served from a result another arm of this ablation
paid: a cache hit on such a key, or a join of such an in-flight call (the owner stores the
result before the joiners wake). Hits on results cached before the ablation, or on the arm's
own results, are not counted. Owners and counts are kept in `sharing.json` across sessions
(written when a session ends, also when it stops or is interrupted), so a resumed ablation
keeps counting from where it was; a session killed with SIGKILL loses its own records.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from opro.caches.base import CacheStats, ResultCache
from opro.engine.model import Generation, Model, ModelStats
from opro.errors import OproError
from opro.providers.types import Completion, Request

SHARING = "sharing.json"
VERSION = 1
_KEY_CHARS = 24  # 96 bits of the sha256 key: no two results of one ablation collide
ROLES = ("scorer", "optimizer")


class SharingError(OproError):
    """sharing.json cannot be read or written; the message names it."""


class Sharing:
    """Result owners (key -> arm index) and, per arm and role, requests saved by sharing."""

    def __init__(self, arms: Sequence[str]) -> None:
        self.arms = list(arms)
        self.owners: dict[str, int] = {}
        self.saved: dict[str, dict[str, int]] = {a: dict.fromkeys(ROLES, 0) for a in arms}

    def paid(self, key: str, arm: int) -> None:
        self.owners.setdefault(key[:_KEY_CHARS], arm)

    def served(self, key: str, arm: int, role: str) -> None:
        """A request of `arm` answered without a call: counted if another arm paid it."""
        owner = self.owners.get(key[:_KEY_CHARS])
        if owner is not None and owner != arm:
            self.saved[self.arms[arm]][role] += 1

    def total(self, role: str | None = None) -> int:
        roles = ROLES if role is None else (role,)
        return sum(counts[r] for counts in self.saved.values() for r in roles)

    def to_json(self) -> bytes:
        data = {
            "version": VERSION,
            "arms": self.arms,
            "saved": self.saved,
            "owners": self.owners,
        }
        return orjson.dumps(data)

    def save(self, directory: Path) -> None:
        path = directory / SHARING
        tmp = directory / f".{SHARING}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(self.to_json())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise SharingError(f"cannot write {path}: {exc.strerror}") from None

    @classmethod
    def load(cls, directory: Path, arms: Sequence[str]) -> Sharing:
        """The counts of earlier sessions (a fresh record if there were none)."""
        sharing = cls(arms)
        path = directory / SHARING
        if not path.exists():
            return sharing
        data = read_sharing(path)
        index = {name: i for i, name in enumerate(arms)}
        stored = data["arms"]
        for key, owner in data["owners"].items():
            if 0 <= owner < len(stored) and stored[owner] in index:
                sharing.owners[key] = index[stored[owner]]
        for name, counts in data["saved"].items():
            if name in sharing.saved:
                sharing.saved[name] = {r: counts.get(r, 0) for r in ROLES}
        return sharing


def read_sharing(path: Path) -> dict[str, Any]:
    """sharing.json, checked: arm names, owner indices and non-negative counts."""
    try:
        data: Any = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise SharingError(f"cannot read {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError:
        raise SharingError(f"{path} is not valid JSON; delete it to count afresh") from None
    ok = (
        isinstance(data, dict)
        and data.get("version") == VERSION
        and isinstance(data.get("arms"), list)
        and all(isinstance(a, str) for a in data["arms"])
        and isinstance(data.get("owners"), dict)
        and all(type(v) is int for v in data["owners"].values())
        and isinstance(data.get("saved"), dict)
        and all(
            isinstance(c, dict) and all(type(n) is int and n >= 0 for n in c.values())
            for c in data["saved"].values()
        )
    )
    if not ok:
        raise SharingError(f"{path} is not a sharing record; delete it to count afresh")
    return dict(data)


class ArmCache:
    """The engine's cache as one arm sees it: records what the arm paid for and counts hits
    on what other arms paid for. With no cache underneath it stores nothing (joins of
    in-flight calls are still attributed)."""

    def __init__(self, inner: ResultCache | None, sharing: Sharing, arm: int, role: str) -> None:
        self.inner = inner
        self.sharing = sharing
        self.arm = arm
        self.role = role
        self.stats: CacheStats = inner.stats if inner is not None else CacheStats()

    def get(self, key: str) -> Completion | None:
        found = self.inner.get(key) if self.inner is not None else None
        if found is not None:
            self.sharing.served(key, self.arm, self.role)
        return found

    def get_many(self, keys: Sequence[str]) -> list[Completion | None]:
        inner = self.inner
        if inner is None:
            return [None] * len(keys)
        get_many = getattr(inner, "get_many", None)  # a user's cache may predate get_many
        found = get_many(keys) if get_many is not None else [inner.get(k) for k in keys]
        for key, hit in zip(keys, found, strict=True):
            if hit is not None:
                self.sharing.served(key, self.arm, self.role)
        return found

    def set(self, key: str, completion: Completion) -> None:
        self.sharing.paid(key, self.arm)
        if self.inner is not None:
            self.inner.set(key, completion)

    def close(self) -> None:
        """The engine closes the cache underneath; a view has nothing of its own to close."""


class ArmModel(Model):
    """A sweep model as one arm uses it: everything shared but the counters and the cache
    view (and, for a repeat, the optimizer's sampling seed)."""

    def __init__(self, base: Model, cache: ArmCache, *, seed: int | None = None) -> None:
        # Not Model.__init__: the provider, limiter, single-flight table, budget and cache
        # identity are the base model's own objects, shared, not new ones.
        self.__dict__.update(vars(base))
        self.stats = ModelStats()
        self.cache = cache
        self.arm_cache = cache
        if seed is not None:
            self.decoding = replace(base.decoding, seed=seed)

    async def generate(self, request: Request, **options: Any) -> Generation:
        key = options.pop("key", None) or self.key(request, options.get("sample", 0))
        generation = await super().generate(request, key=key, **options)
        if generation.shared:  # joined a call someone else started (and stored)
            self.arm_cache.sharing.served(key, self.arm_cache.arm, self.arm_cache.role)
        return generation
