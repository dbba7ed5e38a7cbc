"""When two instructions are the same: polishing for proposals, identity for what is sent.

Two notions, kept apart on purpose:

* `canonicalize` is the paper's polishing of optimizer proposals (trim, drop `**`, capitalise
  the first letter; we also fold runs of whitespace). `engine.candidates` applies it before a
  proposal is recorded and scored, and the optimizer deduplicates proposals by the polished
  text, as the paper's code does by hash.
* `dedupe` is for instructions a caller hands to `evaluate`: they are sent exactly as given,
  so two are duplicates only when the prompts sent would be identical (`tasks.prompts.placed`).
  `Note: 2**3` and `Note: 23` differ in meaning, and so do `a` and `A` to a scorer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from opro.tasks.prompts import placed

_WS = re.compile(r"\s+")


def canonicalize(instruction: str) -> str:
    """A proposal as the paper polishes it: no `**`, whitespace folded, first letter capitalised."""
    text = _WS.sub(" ", instruction.replace("**", "")).strip()
    return text[:1].upper() + text[1:]


def dedupe(instructions: Sequence[str]) -> tuple[list[str], list[int]]:
    """Distinct instructions as sent, in first-seen order, and each input's index there.

    The key is the text the prompt would hold (`placed`): the instruction verbatim, or ""
    for a blank one, so no two instructions that would send different prompts are merged.
    """
    unique: list[str] = []
    position: dict[str, int] = {}
    index: list[int] = []
    for ins in instructions:
        canon = placed(ins)
        slot = position.get(canon)
        if slot is None:
            slot = position[canon] = len(unique)
            unique.append(canon)
        index.append(slot)
    return unique, index


def seen_filter(candidates: Iterable[str], seen: set[str]) -> list[str]:
    """Polished candidates not in `seen` (which is updated), for the optimizer's history."""
    fresh: list[str] = []
    for cand in candidates:
        canon = canonicalize(cand)
        if canon not in seen:
            seen.add(canon)
            fresh.append(canon)
    return fresh
