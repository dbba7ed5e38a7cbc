"""Expected output tokens from evidence: cached answers, a calibration sample, or a stated
default, each labelled; ranges that hold the truth and never leave [1, max_tokens]."""

from __future__ import annotations

import math

import pytest

from opro.caches.memory import MemoryCache
from opro.engine.budget import Budget, BudgetExceeded, starvation_note
from opro.engine.engine import Engine
from opro.engine.estimate import (
    MIN_EVIDENCE,
    OutputStats,
    answer_format,
    calibration_picks,
    choose,
    default_output,
)
from opro.engine.model import Decoding, Price
from opro.engine.plan import plan_evaluation
from opro.engine.spend import Spend
from opro.providers.types import Completion, Usage
from opro.tasks.prompts import render_prompt
from opro.tasks.types import Example

PRICE = Price(1.0, 1.0)
EXAMPLES = [Example(f"Is {i} odd?", "Yes" if i % 2 else "No") for i in range(20)]


def stats_of(values: list[float]) -> OutputStats:
    s = OutputStats()
    for v in values:
        s = s.add(v)
    return s


def test_stats_mean_and_spread() -> None:
    s = stats_of([10, 20, 30])
    assert s.n == 3 and s.mean == 20 and math.isclose(s.sd, 10.0)
    assert (s + stats_of([40])).mean == 25
    assert OutputStats().mean == 0 and stats_of([5]).sd == 0


def test_each_source_in_order_and_labelled() -> None:
    default = default_output("", "yes_no", 256)
    own, pooled = stats_of([50, 60, 70]), stats_of([300, 310, 320])
    assert choose(own, 0, pooled, 0, default).source == "cache"
    assert "same instruction" in choose(own, 0, pooled, 0, default).detail
    assert choose(own, 3, pooled, 0, default).source == "calibration"
    few = stats_of([50] * (MIN_EVIDENCE - 1))
    from_pool = choose(few, 0, pooled, 0, default)
    assert from_pool.mean == 310 and "same format" in from_pool.detail
    fallback = choose(few, 0, OutputStats(), 0, default)
    assert fallback is default and fallback.label().startswith("default: short answer")


def test_the_default_follows_instruction_answer_type_and_max_tokens() -> None:
    assert answer_format("Let's think step by step.", "yes_no", 1024) == "chain of thought"
    assert answer_format("", "yes_no", 1024) == "short answer"
    assert answer_format("", "number", 1024) == "chain of thought"  # worked out unasked
    assert answer_format("Think step by step.", "number", 8) == "short answer"  # cannot be long
    cot = default_output("Think step by step.", "yes_no", 1024)
    assert cot.n == 0 and cot.mean > default_output("", "yes_no", 1024).mean
    capped = default_output("Think step by step.", "yes_no", 100)
    assert capped.total(10)[2] <= 10 * 100  # never above max_tokens per answer


def test_ranges_hold_the_truth_and_stay_in_bounds() -> None:
    evidence = stats_of([40, 60, 80, 100, 120])
    est = choose(evidence, 0, OutputStats(), 0, default_output("", "yes_no", 128))
    mean, low, high = est.total(100)
    assert low < 100 * 80 == mean < high
    assert low >= 100 and high <= 100 * 128
    assert est.total(0) == (0.0, 0.0, 0.0)
    # More evidence, a narrower range.
    wide = choose(stats_of([40, 120, 80]), 0, OutputStats(), 0, est)
    assert wide.total(100)[2] - wide.total(100)[1] > high - low


def test_calibration_picks_spread_over_instructions_skip_taken_and_are_seeded() -> None:
    picks = calibration_picks(3, 10, 7, seed=1, taken={(0, 0), (0, 1)})
    assert len(picks) == len(set(picks)) == 7
    assert [sum(1 for i, _ in picks if i == k) for k in range(3)] == [3, 2, 2]
    assert not {(0, 0), (0, 1)} & set(picks)
    assert picks == calibration_picks(3, 10, 7, seed=1, taken={(0, 0), (0, 1)})
    assert len(calibration_picks(2, 3, 100, seed=0, taken=set())) == 6  # all there is


async def test_a_plan_takes_expected_output_from_cached_answers() -> None:
    """Half of each instruction's pairs cached: the other half is expected at their mean;
    an instruction with nothing cached borrows from the one of its own format."""
    cache = MemoryCache()
    async with Engine(use_cache=False) as engine:
        scorer = engine.model("simulated/x", decoding=Decoding(max_tokens=256), price=PRICE)
        scorer.cache = cache
        for ins, out in (("", 2), ("Think step by step.", 150)):
            for ex in EXAMPLES[:10]:
                request = scorer.request(render_prompt(ins, ex.input, "Q_begin"))
                cache.set(scorer.key(request), Completion(("x",), Usage(30, out), ("stop",)))
        plan = plan_evaluation(
            ["", "Think step by step.", "Explain your reasoning step by step."], EXAMPLES, scorer
        )
    assert (plan.pairs, plan.cached, plan.calls) == (60, 20, 40)
    # 10 x 2 + 10 x 150 + 20 x 150 (borrowed from the other chain-of-thought instruction).
    assert plan.est_tokens_out == pytest.approx(10 * 2 + 10 * 150 + 20 * 150)
    assert "same instruction" in plan.output_source and "same format" in plan.output_source
    assert plan.est_out_low <= plan.est_tokens_out <= plan.est_out_high
    assert plan.est_cost_usd is not None and plan.worst_cost_usd is not None
    assert plan.est_cost_usd < plan.worst_cost_usd
    assert "expected cost $" in plan.describe() and "worst case $" in plan.describe()


async def test_without_evidence_the_plan_states_its_default() -> None:
    async with Engine(use_cache=False) as engine:
        scorer = engine.model("simulated/x", decoding=Decoding(max_tokens=256), price=PRICE)
        plan = plan_evaluation(["Think step by step."], EXAMPLES, scorer)
    assert plan.output_source.startswith("default: chain of thought")
    assert plan.est_tokens_out == 20 * 200 < plan.max_tokens_out == 20 * 256


def test_the_stop_message_says_when_worst_case_reservations_starve_the_run() -> None:
    budget = Budget(max_usd=5.0, spent=Spend(100, 0, 0, 4.59))
    budget.expected_call = Spend(1, 500, 60, 0.0009)
    worst = Spend(1, 900, 1024, 0.012)
    budget.settle(budget_reserve_now(budget, Spend(1, 0, 0, 0.4)), Spend(1, 0, 0, 0.4))
    with pytest.raises(BudgetExceeded):
        budget.check(worst)
    note = starvation_note(budget)
    assert note is not None
    assert note.startswith("stopped with $0.0100 of $5.00 unspent: each call reserves its worst")
    assert "($0.012 at 1024 output tokens" in note and "raise --budget-usd" in note
    # When even the expected cost would not fit, the budget is simply spent: no such note.
    budget.expected_call = Spend(1, 5000, 5000, 0.011)
    assert starvation_note(budget) is None
    assert starvation_note(Budget(max_usd=1.0)) is None  # nothing refused


def budget_reserve_now(budget: Budget, cost: Spend):  # type: ignore[no-untyped-def]
    """A reservation without a running loop (nothing is in flight, so it never waits)."""
    import asyncio

    return asyncio.run(budget.reserve(cost))
