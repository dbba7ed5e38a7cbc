"""`--calibrate N`: pay for N pairs first, so a plan's expected output comes from real answers.

The sample is spread over the instructions (round-robin) with examples drawn by a seeded
shuffle (`estimate.calibration_picks`), and skips pairs already cached (those are evidence
for free). The calls go through the scorer like any other, so the budget, limits, retries
and the cache apply: their answers are cached, the plan built afterwards reads them as
evidence labelled "calibration", and the run reuses them instead of paying again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from opro.engine.budget import BudgetExceeded
from opro.engine.dedup import dedupe
from opro.engine.estimate import calibration_picks
from opro.engine.model import Generation, Model, ModelCallError
from opro.engine.spend import NOTHING, Spend
from opro.tasks.prompts import Position, render_prompt
from opro.tasks.types import Example

# Candidates drawn per pair wanted, so that cached pairs can be skipped without a second draw.
_OVERDRAW = 4


@dataclass(frozen=True, slots=True)
class Calibration:
    """What the sample paid and the cache keys of the answers it got."""

    paid: Spend = NOTHING
    keys: frozenset[str] = frozenset()
    failed: int = 0
    stopped: bool = False  # the budget refused part of it (the run will stop the same way)


async def calibrate(
    instructions: Sequence[str],
    examples: Sequence[Example],
    scorer: Model,
    n: int,
    *,
    seed: int = 0,
    position: Position = "Q_begin",
    qa_framing: bool | None = None,
) -> Calibration:
    """Pay for up to `n` uncached pairs of `instructions` x `examples`."""
    unique, _ = dedupe(instructions)
    if n <= 0 or not unique or not examples:
        return Calibration()
    await scorer.prepare()
    picks = calibration_picks(len(unique), len(examples), n * _OVERDRAW, seed, set())
    requests = [
        scorer.request(render_prompt(unique[i], examples[j].input, position, qa_framing=qa_framing))
        for i, j in picks
    ]
    keys = [scorer.key(r) for r in requests]
    cache = scorer.cache
    found = cache.get_many(keys) if cache is not None else [None] * len(keys)
    todo = [(r, k) for r, k, hit in zip(requests, keys, found, strict=True) if hit is None][:n]
    results = await asyncio.gather(
        *(scorer.generate(r, key=k) for r, k in todo), return_exceptions=True
    )
    paid, got, failed, stopped = NOTHING, set(), 0, False
    for (_, key), result in zip(todo, results, strict=True):
        if isinstance(result, Generation):
            paid += Spend.of(result.usage, scorer.cost(result.usage), result.calls)
            got.add(key)
        elif isinstance(result, BudgetExceeded | ModelCallError):
            paid += result.paid
            failed += 1
            stopped = stopped or isinstance(result, BudgetExceeded)
        else:
            raise result
    return Calibration(paid, frozenset(got), failed, stopped)
