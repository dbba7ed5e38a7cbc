"""The evaluation's hot path: cache reads in batches, graders prepared once per example,
pairs looked up as they are needed, and the same report as before.

A warm rerun of 20,000 pairs spent a third of its time on one cache query per pair and
most of the rest re-parsing each example's target and options for every pair. These tests
pin what replaced that: `get_many` per chunk of pairs (never `get` per hit), `prepare` once
per example, and the reports that come out unchanged, budget stops included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import opro
from opro.caches.memory import MemoryCache
from opro.engine.budget import Budget
from opro.engine.evaluate import LOOKUP_CHUNK
from opro.providers.types import Completion
from opro.tasks.grading import Grading

EXAMPLES = [
    opro.Example(f"Is {i} even? Answer True or False.", str(i % 2 == 0)) for i in range(300)
]
INSTRUCTIONS = ["", "Think.", "Answer briefly."]


class CountingCache(MemoryCache):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.batches: list[int] = []

    def get(self, key: str) -> Completion | None:
        self.gets += 1
        return super().get(key)

    def get_many(self, keys: Sequence[str]) -> list[Completion | None]:
        self.batches.append(len(keys))
        return [super(CountingCache, self).get(k) for k in keys]


class PreparingGrader:
    """Grades like `TaskGrader` and counts how often it prepares and how often it is called."""

    def __init__(self, rules: Grading = "strict") -> None:
        self.inner = opro.TaskGrader(rules)
        self.version = self.inner.version
        self.prepared: list[str] = []
        self.calls = 0

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        self.calls += 1
        return self.inner(prediction, example)

    def prepare(self, example: opro.Example) -> Callable[[str], bool]:
        self.prepared.append(example.input)
        return self.inner.prepare(example)


class PlainGrader:
    version = "plain"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        self.calls += 1
        return prediction.strip(".").endswith(example.target)


async def test_a_warm_rerun_reads_the_cache_in_batches() -> None:
    cache = CountingCache()
    async with opro.Engine(cache=cache) as engine:
        scorer = engine.model("simulated/batch")
        cold = await engine.evaluate(INSTRUCTIONS, EXAMPLES, scorer)
        cache.gets, cache.batches = 0, []
        tasks_before = len(asyncio.all_tasks())
        warm = await engine.evaluate(INSTRUCTIONS, EXAMPLES, scorer)
        assert len(asyncio.all_tasks()) == tasks_before
    pairs = len(INSTRUCTIONS) * len(EXAMPLES)
    assert warm.totals.cache_hits == pairs and warm.totals.calls == 0
    assert cache.gets == 0
    assert sum(cache.batches) == pairs and max(cache.batches) == LOOKUP_CHUNK
    assert len(cache.batches) == -(-pairs // LOOKUP_CHUNK)
    assert [s.accuracy for s in warm.instructions] == [s.accuracy for s in cold.instructions]
    assert [s.wrong for s in warm.instructions] == [s.wrong for s in cold.instructions]


async def test_each_example_is_prepared_once_per_grader() -> None:
    main, reference = PreparingGrader(), PreparingGrader("reference")
    async with opro.Engine(cache=MemoryCache()) as engine:
        scorer = engine.model("simulated/prepare")
        report = await engine.evaluate(
            INSTRUCTIONS, EXAMPLES, scorer, grader=main, reference_grader=reference
        )
        plain = await engine.evaluate(INSTRUCTIONS, EXAMPLES, scorer)
    assert sorted(main.prepared) == sorted(ex.input for ex in EXAMPLES)
    assert sorted(reference.prepared) == sorted(main.prepared)
    assert main.calls == reference.calls == 0
    for mine, theirs in zip(report.instructions, plain.instructions, strict=True):
        assert (mine.correct, mine.correct_reference) == (theirs.correct, theirs.correct_reference)


async def test_a_grader_that_cannot_prepare_is_called_for_every_answer() -> None:
    grader = PlainGrader()
    async with opro.Engine(cache=MemoryCache()) as engine:
        scorer = engine.model("simulated/plain")
        report = await engine.evaluate(INSTRUCTIONS, EXAMPLES, scorer, grader=grader)
    assert grader.calls == len(INSTRUCTIONS) * len(EXAMPLES)
    assert report.instructions[0].correct > 0


async def test_a_budget_stop_still_grades_the_cached_pairs_after_it(tmp_path: Path) -> None:
    async with opro.Engine(cache_dir=tmp_path) as engine:
        scorer = engine.model("simulated/budget")
        await engine.evaluate(INSTRUCTIONS[2:], EXAMPLES, scorer)  # the last instruction, cached
    async with opro.Engine(cache_dir=tmp_path, budget=Budget(max_tokens=3_000)) as engine:
        scorer = engine.model("simulated/budget")
        report = await engine.evaluate(INSTRUCTIONS, EXAMPLES, scorer)
    assert report.stopped == "budget"
    first, second, cached = report.instructions
    assert 0 < first.n < len(EXAMPLES) and second.n == 0  # the budget stopped the first
    assert cached.n == cached.cache_hits == len(EXAMPLES) and cached.skipped == 0
    assert report.totals.cache_hits == len(EXAMPLES)
    assert report.totals.skipped == 2 * len(EXAMPLES) - first.n
