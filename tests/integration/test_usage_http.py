"""A 200 whose `usage` is broken: the answer is kept and the request's worst case is billed.

Every provider that reads a server's usage (OpenAI wire format, Anthropic, Gemini) is run
against its fake server with each broken shape the fakes can produce. The fakes bill what
they really computed, so the budget's spend can be compared with the server's own bill:
never a traceback, never a retry, never a negative or absent charge, never less than billed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

import opro
from opro.caches.memory import MemoryCache
from opro.engine.budget import Budget
from opro.engine.engine import Engine
from opro.engine.evaluate import evaluate
from opro.engine.model import Model
from opro.engine.tokens import worst_case_usage
from opro.testing.fake_anthropic import FakeAnthropicServer
from opro.testing.fake_gemini import FakeGeminiServer
from opro.testing.fake_openai import (
    OVERBILL_TOKENS,
    USAGE_FAULTS,
    FakeOpenAIServer,
    FakeServerConfig,
)

PRICE = opro.Price(2.0, 8.0)
KEY = "sk-usage-test"
ANSWER = "The answer is True."
VENDORS: dict[str, tuple[type[FakeOpenAIServer], str]] = {
    "openai": (FakeOpenAIServer, "openai/fake-model"),
    "anthropic": (FakeAnthropicServer, "anthropic/claude-x"),
    "gemini": (FakeGeminiServer, "google/gemini-x"),
}
BROKEN = sorted(USAGE_FAULTS - {"usage_over"})


def answer(prompt: str) -> str:
    return ANSWER


@asynccontextmanager
async def scorer(vendor: str, budget: Budget) -> AsyncIterator[tuple[FakeOpenAIServer, Model]]:
    server_class, spec = VENDORS[vendor]
    config = FakeServerConfig(responder=answer, require_api_key=KEY)
    retry = opro.RetryPolicy(base_delay=0.001, max_delay=0.01)
    async with (
        server_class(config) as srv,
        Engine(cache=MemoryCache(), retry=retry, budget=budget) as engine,
    ):
        model = engine.model(
            spec,
            base_url=srv.base_url,
            api_key=KEY,
            price=PRICE,
            decoding=opro.Decoding(max_tokens=16),
        )
        yield srv, model


def billed(srv: FakeOpenAIServer) -> tuple[int, float]:
    tokens = srv.billed_prompt_tokens + srv.billed_completion_tokens
    return tokens, PRICE.cost_of(srv.billed_prompt_tokens, srv.billed_completion_tokens)


@pytest.mark.parametrize("kind", BROKEN)
@pytest.mark.parametrize("vendor", sorted(VENDORS))
async def test_a_broken_usage_keeps_the_answer_and_bills_the_worst_case(
    vendor: str, kind: str
) -> None:
    budget = Budget(max_usd=1.0, max_tokens=1_000_000)
    async with scorer(vendor, budget) as (srv, model):
        srv.inject(kind)
        request = model.request("Is 7 odd? Answer True or False.")
        generation = await model.generate(request)
        worst = worst_case_usage(request)
        assert generation.completion.text == ANSWER
        assert generation.calls == 1 and srv.requests_total == 1  # not retried
        assert generation.usage == worst  # what was charged, not what was reported
        tokens, usd = billed(srv)
        assert budget.spent_tokens == worst.input_tokens + worst.output_tokens >= tokens > 0
        assert budget.spent_usd == pytest.approx(PRICE.cost(worst)) and budget.spent_usd >= usd
        assert budget.reserved_usd == 0 and budget.reserved_tokens == 0


@pytest.mark.parametrize("vendor", sorted(VENDORS))
async def test_a_usage_above_the_bound_is_charged_as_the_server_billed_it(
    vendor: str, caplog: pytest.LogCaptureFixture
) -> None:
    budget = Budget(max_usd=1.0)
    async with scorer(vendor, budget) as (srv, model):
        srv.inject("usage_over")
        request = model.request("Is 7 odd? Answer True or False.")
        generation = await model.generate(request)
        tokens, usd = billed(srv)
        assert generation.completion.text == ANSWER
        assert generation.usage.input_tokens > worst_case_usage(request).input_tokens
        assert srv.billed_prompt_tokens > OVERBILL_TOKENS
        assert budget.spent_tokens == tokens
        assert budget.spent_usd == pytest.approx(usd)
    assert "more than the request's worst case" in caplog.text


@pytest.mark.parametrize("vendor", sorted(VENDORS))
async def test_a_well_formed_usage_is_charged_exactly(vendor: str) -> None:
    budget = Budget(max_usd=1.0)
    async with scorer(vendor, budget) as (srv, model):
        for i in range(3):
            await model.generate(model.request(f"Is {i} odd? Answer True or False."))
        tokens, usd = billed(srv)
        assert budget.spent_tokens == tokens and budget.spent_usd == pytest.approx(usd)


@pytest.mark.parametrize("kind", BROKEN)
async def test_an_evaluation_through_broken_usage_never_ends_in_a_traceback(
    kind: str, tmp_path: Path
) -> None:
    examples = [opro.Example(f"Is {i} odd?", "True") for i in range(12)]
    budget = Budget(max_usd=1.0)
    async with scorer("openai", budget) as (srv, model):
        srv.config.fault_rates = {kind: 0.5}
        report = await evaluate(["", "Think."], examples, model, grader=Exact())
        tokens, usd = billed(srv)
    assert report.totals.errors == 0 and report.totals.pairs == 24
    assert report.totals.calls == srv.requests_total == 24
    assert report.totals.cost_usd == pytest.approx(budget.spent_usd)
    assert budget.spent_usd >= usd and budget.spent_tokens >= tokens


class Exact:
    version = "t"

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        return prediction == ANSWER
