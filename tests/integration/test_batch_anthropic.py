"""Batch mode against the loopback fake of Anthropic's Message Batches API (real HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import opro
from opro.engine.batch import BatchSettings
from opro.engine.batch_evaluate import evaluate_in_batches
from opro.engine.batch_state import BatchStateFile
from opro.engine.budget import Budget
from opro.engine.engine import Engine
from opro.engine.model import Model, Price
from opro.tasks.prompts import render_prompt
from opro.testing.fake_anthropic_batch import FakeAnthropicBatchServer
from opro.testing.fake_openai import FakeServerConfig

KEY = "sk-ant-batch-test-55555"
PRICE = Price(3.0, 15.0)
EXAMPLES = [opro.Example(f"Is {i} odd?", "True" if i % 2 else "False") for i in range(10)]
INSTRUCTIONS = ["Answer True or False.", "Be brief."]


async def no_sleep(seconds: float) -> None:
    """Virtual time: the fake's state machine, not a clock, ends the batch."""


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropicBatchServer]:
    async with FakeAnthropicBatchServer(FakeServerConfig(require_api_key=KEY)) as srv:
        yield srv


def scorer(engine: Engine, fake: FakeAnthropicBatchServer) -> Model:
    return engine.model("anthropic/fake-model", base_url=fake.base_url, api_key=KEY, price=PRICE)


async def run(
    tmp_path: Path,
    fake: FakeAnthropicBatchServer,
    settings: BatchSettings | None = None,
    *,
    budget: Budget | None = None,
    resume: bool = False,
) -> opro.EvalReport:
    async with Engine(
        cache_dir=tmp_path / "cache", retry=opro.RetryPolicy(timeout=5.0), budget=budget
    ) as engine:
        return await evaluate_in_batches(
            engine,
            INSTRUCTIONS,
            EXAMPLES,
            scorer(engine, fake),
            run_dir=tmp_path / "run",
            settings=settings or BatchSettings(),
            resume=resume,
            sleep=no_sleep,
        )


def batch_cost(fake: FakeAnthropicBatchServer) -> float:
    tokens_in, tokens_out = fake.batch_billed_prompt_tokens, fake.batch_billed_completion_tokens
    return (tokens_in * PRICE.input_per_m + tokens_out * PRICE.output_per_m) / 2e6


async def test_complete(fake: FakeAnthropicBatchServer, tmp_path: Path) -> None:
    report = await run(tmp_path, fake)
    t = report.totals
    assert fake.creates == 1 and fake.requests_total == 0
    assert t.calls == 20 and t.errors == 0 and t.pairs == 20
    assert (t.tokens_in, t.tokens_out) == (
        fake.batch_billed_prompt_tokens,
        fake.batch_billed_completion_tokens,
    )
    assert t.cost_usd == pytest.approx(batch_cost(fake))
    [batch] = fake.batches.values()
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        model = scorer(engine, fake)
        keys = {model.prompt_key(render_prompt(i, e.input)) for i in INSTRUCTIONS for e in EXAMPLES}
    assert {line["custom_id"] for line in batch.lines} == keys
    again = await run(tmp_path, fake)
    assert again.totals.cache_hits == 20 and fake.creates == 1


async def test_expired_go_to_a_follow_up_batch(
    fake: FakeAnthropicBatchServer, tmp_path: Path
) -> None:
    fake.control.outcomes, fake.control.answer_first = ["expire", "complete"], 7
    report = await run(tmp_path, fake)
    assert [len(b.lines) for b in fake.batches.values()] == [20, 13]
    assert report.totals.errors == 0
    assert report.totals.cost_usd == pytest.approx(batch_cost(fake))


async def test_canceled_requests_can_go_live(
    fake: FakeAnthropicBatchServer, tmp_path: Path
) -> None:
    fake.control.outcome, fake.control.answer_first = "cancel", 5
    report = await run(tmp_path, fake, BatchSettings(retry="live"))
    assert fake.creates == 1 and fake.requests_total == 15
    assert report.totals.errors == 0 and report.totals.calls == 20


async def test_errored_requests(fake: FakeAnthropicBatchServer, tmp_path: Path) -> None:
    fake.control.fail_every, fake.control.fail_status = 4, 400
    report = await run(tmp_path, fake)
    assert fake.creates == 1 and report.totals.errors == 5
    assert "Injected failure" in report.instructions[0].error_messages[0]
    assert report.totals.cost_usd == pytest.approx(batch_cost(fake))


async def test_interrupted_create_is_found_on_resume(
    fake: FakeAnthropicBatchServer, tmp_path: Path
) -> None:
    """Killed after the create reached the vendor, before its id was recorded: the resumed
    session adopts the batch (created after the intent, same size) instead of a new one."""
    fake.control.hang_create = True
    task = asyncio.create_task(run(tmp_path, fake))
    await fake.created.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [e.status for e in BatchStateFile(tmp_path / "run").load()] == ["intent"]
    fake.control.hang_create = False
    report = await run(tmp_path, fake, resume=True)
    assert fake.creates == 1 and fake.lists == 1
    assert report.totals.calls == 20 and report.totals.errors == 0


async def test_budget_refuses_before_submitting(
    fake: FakeAnthropicBatchServer, tmp_path: Path
) -> None:
    report = await run(tmp_path, fake, budget=Budget(max_tokens=100))
    assert fake.creates == 0 and report.stopped == "budget" and report.totals.skipped == 20
