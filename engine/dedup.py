"""Canonical forms of instructions, so equivalent spellings are scored once.

The paper cleans every optimizer proposal (trim, drop `**`, capitalise the first letter)
and deduplicates by the cleaned text; we also fold runs of whitespace, which change the
prompt's bytes but not what any reader takes the instruction to say.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_WS = re.compile(r"\s+")


def canonicalize(instruction: str) -> str:
    """The form that is scored: no `**`, whitespace folded, first letter capitalised."""
    text = _WS.sub(" ", instruction.replace("**", "")).strip()
    return text[:1].upper() + text[1:]


def dedupe(instructions: Sequence[str]) -> tuple[list[str], list[int]]:
    """Unique canonical forms in first-seen order, and for each input its index there."""
    unique: list[str] = []
    position: dict[str, int] = {}
    index: list[int] = []
    for ins in instructions:
        canon = canonicalize(ins)
        slot = position.get(canon)
        if slot is None:
            slot = position[canon] = len(unique)
            unique.append(canon)
        index.append(slot)
    return unique, index


def seen_filter(candidates: Iterable[str], seen: set[str]) -> list[str]:
    """Canonical candidates not in `seen` (which is updated), for the optimizer's history."""
    fresh: list[str] = []
    for cand in candidates:
        canon = canonicalize(cand)
        if canon not in seen:
            seen.add(canon)
            fresh.append(canon)
    return fresh
