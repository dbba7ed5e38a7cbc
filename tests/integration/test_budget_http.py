"""Budgets over real HTTP: the server's own token count never exceeds what was allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

import opro
from opro.engine.budget import Budget
from opro.engine.engine import Engine
from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig

PRICE = opro.Price(2.0, 8.0)  # USD per million tokens
EXAMPLES = [
    opro.Example(f"Question {i}: is {i} a multiple of three?", str(i % 3 == 0)) for i in range(60)
]


class AnyGrader:
    version = "t"

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        return prediction.strip() == example.target


def billed_usd(server: FakeOpenAIServer) -> float:
    return PRICE.cost_of(server.billed_prompt_tokens, server.billed_completion_tokens)


@pytest.mark.parametrize("concurrency", [1, 8, 64])
async def test_the_server_never_bills_more_than_the_budget(
    tmp_path: Path, concurrency: int
) -> None:
    budget_usd = 0.0004
    async with FakeOpenAIServer(
        FakeServerConfig(fault_rates={"503": 0.1, "truncated": 0.1})
    ) as srv:
        retry = opro.RetryPolicy(base_delay=0.001, max_delay=0.01)
        async with Engine(
            cache_dir=tmp_path, retry=retry, budget=Budget(max_usd=budget_usd)
        ) as engine:
            scorer = engine.model(
                "openai/fake",
                base_url=srv.base_url,
                price=PRICE,
                limits=opro.LimitConfig(max_concurrency=concurrency),
                decoding=opro.Decoding(max_tokens=16),
            )
            report = await engine.evaluate(["A", "B", "C"], EXAMPLES, scorer, grader=AnyGrader())
            assert report.stopped == "budget"
            assert report.totals.skipped > 0
            assert report.totals.pairs + report.totals.skipped == 180
            assert billed_usd(srv) <= budget_usd
            assert engine.budget.spent_usd <= budget_usd
            assert engine.budget.spent_usd >= billed_usd(srv)  # accounting is conservative


async def test_resuming_with_a_larger_budget_finishes_and_pays_nothing_twice(
    tmp_path: Path,
) -> None:
    async with FakeOpenAIServer() as srv:

        async def run_with(usd: float) -> opro.EvalReport:
            async with Engine(cache_dir=tmp_path, budget=Budget(max_usd=usd)) as engine:
                scorer = engine.model(
                    "openai/fake",
                    base_url=srv.base_url,
                    price=PRICE,
                    decoding=opro.Decoding(max_tokens=16),
                )
                return await engine.evaluate(["A", "B"], EXAMPLES, scorer, grader=AnyGrader())

        first = await run_with(0.0002)
        assert first.stopped == "budget"
        done_first = first.totals.pairs
        second = await run_with(1.0)
        assert second.stopped is None and second.totals.skipped == 0
        assert second.totals.cache_hits == done_first
        assert max(srv.prompt_counts.values()) == 1
        assert srv.accepted == 120


async def test_a_usd_budget_needs_a_price(tmp_path: Path) -> None:
    async with Engine(cache_dir=tmp_path, budget=Budget(max_usd=1.0)) as engine:
        with pytest.raises(opro.ConfigurationError, match="--price"):
            engine.model("openai/unknown-model", base_url="http://127.0.0.1:9/v1")
        engine.model("openai/gpt-4o-mini", base_url="http://127.0.0.1:9/v1")  # table price
        engine.model("simulated/x")  # free
