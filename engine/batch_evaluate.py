"""Batch mode for evaluations: the pairs a cache lacks, answered by batches, then graded.

`pending_requests` renders, deduplicates, keys and looks up the pairs of one or more
evaluations exactly as `evaluate` does, and returns one request per cache key still missing;
`evaluate_in_batches` runs them through a `BatchRunner` (`engine.batch`) and hands the
answers to `Engine.evaluate`, which grades them as those pairs' calls, priced at the batch
rate. `opro optimize --batch` calls it once per scoring (one batch per step), an
evaluate-only `opro sweep --batch` calls `pending_requests` over every task first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opro.engine.batch import BatchRunner, BatchSettings, Sleep
from opro.engine.dedup import dedupe
from opro.engine.model import Model
from opro.providers.types import Request
from opro.tasks.prompts import Position, render_prompt
from opro.tasks.types import Example

if TYPE_CHECKING:
    from opro.engine.engine import Engine
    from opro.engine.evaluate import EvalReport


def pending_requests(
    model: Model,
    jobs: Sequence[tuple[Sequence[str], Sequence[Example]]],
    *,
    position: Position = "Q_begin",
    qa_framing: bool | None = None,
) -> dict[str, Request]:
    """Every pair of `jobs` (instructions, examples) still missing from the cache, by key.

    Rendered, deduplicated and keyed exactly as `evaluate` does, so what a batch fills is
    what the evaluation then reads."""
    pending: dict[str, Request] = {}
    for instructions, examples in jobs:
        unique, _ = dedupe(instructions)
        prompts = {}
        for instruction in unique:
            for example in examples:
                prompt = render_prompt(instruction, example.input, position, qa_framing=qa_framing)
                prompts[model.prompt_key(prompt)] = prompt
        keys = [k for k in prompts if k not in pending]
        found = model.lookup_many(keys)
        model.stats.cache_hits -= len(found) - found.count(None)  # evaluate counts them
        for key, hit in zip(keys, found, strict=True):
            if hit is None:
                pending[key] = model.request(prompts[key])
    return pending


async def evaluate_in_batches(
    engine: Engine,
    instructions: Sequence[str],
    examples: Sequence[Example],
    scorer: Model,
    *,
    run_dir: str | Path,
    settings: BatchSettings | None = None,
    resume: bool = False,
    sleep: Sleep = asyncio.sleep,
    notify: Callable[[str], None] | None = None,
    position: Position = "Q_begin",
    qa_framing: bool | None = None,
    **evaluate_options: Any,
) -> EvalReport:
    """`Engine.evaluate`, with the pairs missing from the cache answered by batches first
    (their state in `run_dir`/batches.json); what the batches left is called live only with
    `settings.retry == "live"`."""
    started = time.perf_counter()
    await scorer.prepare()
    runner = BatchRunner(
        scorer, run_dir, settings or BatchSettings(), resume=resume, sleep=sleep, notify=notify
    )
    pending = pending_requests(
        scorer, [(instructions, examples)], position=position, qa_framing=qa_framing
    )
    outcome = await runner.run(pending)
    report = await engine.evaluate(
        instructions,
        examples,
        scorer,
        position=position,
        qa_framing=qa_framing,
        answered=outcome.answered,
        answered_price=runner.price,
        **evaluate_options,
    )
    if outcome.refused and report.stopped is None:
        report.stopped = "budget"
    report.totals.wall_s = time.perf_counter() - started  # the wait for the batches included
    return report
