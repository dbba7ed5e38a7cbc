"""Batch mode end to end against the loopback fake of OpenAI's Batch API (real HTTP).

The fake's state machine decides when a batch ends; polling sleeps are replaced by a
recorder (virtual time), so no test waits on the wall clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

import opro
from opro.engine.batch import BatchSettings
from opro.engine.batch_evaluate import evaluate_in_batches
from opro.engine.batch_state import BatchStateError, BatchStateFile
from opro.engine.budget import Budget
from opro.engine.engine import Engine
from opro.engine.model import Model, Price
from opro.tasks.prompts import render_prompt
from opro.testing.fake_openai import FakeServerConfig, default_responder
from opro.testing.fake_openai_batch import FakeOpenAIBatchServer

KEY = "sk-batch-test-0123456789"
PRICE = Price(1.0, 2.0)  # the live price; the batch rate is half
EXAMPLES = [opro.Example(f"Is {i} even?", "True" if i % 2 == 0 else "False") for i in range(12)]
INSTRUCTIONS = ["Answer True or False.", "Think, then answer."]


class Sleeps:
    """A virtual clock for polling: records every wait instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAIBatchServer]:
    async with FakeOpenAIBatchServer(FakeServerConfig(require_api_key=KEY)) as srv:
        yield srv


def scorer(engine: Engine, fake: FakeOpenAIBatchServer) -> Model:
    return engine.model("openai/fake-model", base_url=fake.base_url, api_key=KEY, price=PRICE)


async def run(
    tmp_path: Path,
    fake: FakeOpenAIBatchServer,
    settings: BatchSettings | None = None,
    *,
    budget: Budget | None = None,
    sleeps: Sleeps | None = None,
    resume: bool = False,
) -> opro.EvalReport:
    retry = opro.RetryPolicy(base_delay=0.001, max_delay=0.01, timeout=5.0)
    async with Engine(cache_dir=tmp_path / "cache", retry=retry, budget=budget) as engine:
        return await evaluate_in_batches(
            engine,
            INSTRUCTIONS,
            EXAMPLES,
            scorer(engine, fake),
            run_dir=tmp_path / "run",
            settings=settings or BatchSettings(),
            resume=resume,
            sleep=sleeps or Sleeps(),
        )


def batch_cost(fake: FakeOpenAIBatchServer) -> float:
    tokens_in, tokens_out = fake.batch_billed_prompt_tokens, fake.batch_billed_completion_tokens
    return (tokens_in * PRICE.input_per_m + tokens_out * PRICE.output_per_m) / 2e6


async def test_complete_batch_fills_the_cache_and_bills_half(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    sleeps = Sleeps()
    report = await run(tmp_path, fake, sleeps=sleeps)
    assert fake.creates == 1 and fake.requests_total == 0  # no live call at all
    t = report.totals
    assert t.pairs == 24 and t.errors == 0 and t.calls == 24 and t.cache_hits == 0
    assert (t.tokens_in, t.tokens_out) == (
        fake.batch_billed_prompt_tokens,
        fake.batch_billed_completion_tokens,
    )
    assert t.cost_usd == pytest.approx(batch_cost(fake))
    expected = [
        sum(default_responder(f"{ins}\n{e.input}") == e.target for e in EXAMPLES) / 12
        for ins in INSTRUCTIONS
    ]
    assert [s.accuracy for s in report.instructions] == pytest.approx(expected)
    assert sleeps.waits == [5.0]  # validating -> in_progress -> completed: two polls
    # A rerun reads everything from the same cache, with the same keys as live calls.
    again = await run(tmp_path, fake)
    assert fake.creates == 1 and again.totals.cache_hits == 24 and again.totals.calls == 0


async def test_custom_ids_are_cache_keys_and_no_key_reaches_disk(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    await run(tmp_path, fake)
    batch = next(iter(fake.batches.values()))
    custom_ids = {line["custom_id"] for line in batch.lines}
    entries = BatchStateFile(tmp_path / "run").load()
    assert [e.status for e in entries] == ["collected"]
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        model = scorer(engine, fake)
        keys = {model.prompt_key(render_prompt(i, e.input)) for i in INSTRUCTIONS for e in EXAMPLES}
        assert all(model.lookup(k) is not None for k in keys)  # the live path's keys, cached
    assert custom_ids == keys
    assert all(len(c) == 64 for c in custom_ids)
    assert KEY not in (tmp_path / "run" / "batches.json").read_text()
    assert KEY not in orjson.dumps(batch.lines).decode()


async def test_live_answers_share_the_batch_cache(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    """A live evaluation after a batch one pays nothing: same keys, same cache."""
    await run(tmp_path, fake)
    retry = opro.RetryPolicy(base_delay=0.001, max_delay=0.01, timeout=5.0)
    async with Engine(cache_dir=tmp_path / "cache", retry=retry) as engine:
        report = await engine.evaluate(INSTRUCTIONS, EXAMPLES, scorer(engine, fake))
    assert report.totals.cache_hits == 24 and fake.requests_total == 0


async def test_backoff_doubles_and_is_capped(fake: FakeOpenAIBatchServer, tmp_path: Path) -> None:
    fake.control.hold = True
    sleeps = Sleeps()
    waits_seen: list[float] = []

    async def sleep(seconds: float) -> None:
        await sleeps(seconds)
        waits_seen.append(seconds)
        if len(waits_seen) == 6:
            fake.control.hold = False

    settings = BatchSettings(poll_first_s=1.0, poll_max_s=8.0)
    retry = opro.RetryPolicy(timeout=5.0)
    async with Engine(cache_dir=tmp_path / "cache", retry=retry) as engine:
        await evaluate_in_batches(
            engine,
            INSTRUCTIONS,
            EXAMPLES,
            scorer(engine, fake),
            run_dir=tmp_path / "run",
            settings=settings,
            sleep=sleep,
        )
    assert sleeps.waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


async def test_expired_requests_go_to_a_follow_up_batch(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    fake.control.outcomes, fake.control.answer_first = ["expire", "complete"], 10
    report = await run(tmp_path, fake)
    assert fake.creates == 2
    assert [len(b.lines) for b in fake.batches.values()] == [24, 14]
    assert report.totals.errors == 0 and report.totals.calls == 38  # 14 sent twice
    assert report.totals.cost_usd == pytest.approx(batch_cost(fake))
    assert fake.requests_total == 0


async def test_expired_requests_can_go_live(fake: FakeOpenAIBatchServer, tmp_path: Path) -> None:
    fake.control.outcome, fake.control.answer_first = "expire", 10
    report = await run(tmp_path, fake, BatchSettings(retry="live"))
    assert fake.creates == 1 and fake.requests_total == 14  # the rest at the live price
    live_in = fake.billed_prompt_tokens - fake.batch_billed_prompt_tokens
    live_out = fake.billed_completion_tokens - fake.batch_billed_completion_tokens
    live_cost = (live_in * PRICE.input_per_m + live_out * PRICE.output_per_m) / 1e6
    assert report.totals.calls == 24 and report.totals.errors == 0
    assert report.totals.cost_usd == pytest.approx(batch_cost(fake) + live_cost)


async def test_rounds_run_out_into_failed_pairs_never_cached(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    fake.control.outcome, fake.control.answer_first = "expire", 0
    report = await run(tmp_path, fake, BatchSettings(rounds=2))
    assert fake.creates == 2  # two rounds, then the pairs are errors, not wrong answers
    assert report.totals.errors == 24 and report.totals.calls == 48  # sent twice each
    assert all(s.accuracy is None for s in report.instructions)
    assert report.totals.cost_usd == 0.0
    fake.control.outcome = "complete"
    again = await run(tmp_path, fake)  # nothing was cached: all 24 are paid now
    assert again.totals.calls == 24 and again.totals.cache_hits == 0


async def test_partly_failed_batch(fake: FakeOpenAIBatchServer, tmp_path: Path) -> None:
    """A request the vendor refused (400) is a failed pair; a 500 is retried."""
    fake.control.fail_every, fake.control.fail_status = 5, 400
    report = await run(tmp_path, fake)
    assert fake.creates == 1
    assert report.totals.errors == 4 and report.totals.calls == 24  # failed ones were sent
    assert report.totals.cost_usd == pytest.approx(batch_cost(fake))
    assert "Injected failure" in report.instructions[0].error_messages[0]


async def test_server_errors_in_a_batch_are_retried(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    fake.control.fail_every, fake.control.fail_status = 5, 500
    sleeps = Sleeps()

    async def sleep(seconds: float) -> None:
        await sleeps(seconds)
        fake.control.fail_every = 0 if fake.creates > 1 else 5

    retry = opro.RetryPolicy(timeout=5.0)
    async with Engine(cache_dir=tmp_path / "cache", retry=retry) as engine:
        report = await evaluate_in_batches(
            engine,
            INSTRUCTIONS,
            EXAMPLES,
            scorer(engine, fake),
            run_dir=tmp_path / "run",
            sleep=sleep,
        )
    assert fake.creates == 2 and [len(b.lines) for b in fake.batches.values()] == [24, 4]
    assert report.totals.errors == 0 and report.totals.calls == 28  # 4 sent twice


async def test_cancelled_batch_keeps_its_answers_and_retries_the_rest(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    fake.control.outcomes, fake.control.answer_first = ["cancel", "complete"], 6
    report = await run(tmp_path, fake)
    first, second = fake.batches.values()
    assert first.status == "cancelled" and second.status == "completed"
    assert [len(first.lines), len(second.lines)] == [24, 18]
    assert report.totals.calls == 42 and report.totals.errors == 0


async def test_batch_failing_validation_fails_its_pairs(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    fake.control.outcome = "fail_validation"
    report = await run(tmp_path, fake)
    assert fake.creates == 1 and report.totals.errors == 24 and report.totals.cost_usd == 0.0
    assert "Injected validation failure" in report.instructions[0].error_messages[0]


async def test_cancel_endpoint(fake: FakeOpenAIBatchServer, tmp_path: Path) -> None:
    from opro.providers.batch import batch_api

    fake.control.hold = True
    async with Engine(use_cache=False) as engine:
        api = batch_api(scorer(engine, fake).provider)
        batch_id = await api.submit([api.line("a" * 64, opro.Request(prompt="hi"))], "tok")
        assert (await api.state(batch_id)).phase == "running"
        await api.cancel(batch_id)
        state = await api.state(batch_id)
        assert (state.status, state.phase) == ("cancelled", "ended")
        [item] = await api.results(batch_id)
        assert item.custom_id == "a" * 64 and item.error is not None and item.error.retryable
    assert fake.cancels == 1


async def test_budget_reserves_the_worst_case_before_submitting(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    """A cap below the batch's worst case sends nothing: the pairs are skipped."""
    report = await run(tmp_path, fake, budget=Budget(max_usd=1e-4))
    assert fake.creates == 0 and fake.requests_total == 0
    assert report.stopped == "budget" and report.totals.skipped == 24
    assert report.totals.calls == 0


async def test_budget_settles_at_the_batch_bill(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    budget = Budget(max_usd=1.0)
    report = await run(tmp_path, fake, budget=budget)
    assert budget.reserved.calls == 0 and budget.reserved.cost_usd == 0.0
    assert budget.spent_usd == pytest.approx(batch_cost(fake))
    assert report.totals.cost_usd == pytest.approx(budget.spent_usd)


async def test_open_batches_need_resume(fake: FakeOpenAIBatchServer, tmp_path: Path) -> None:
    from opro.engine.batch_state import BatchEntry

    entry = BatchEntry.new("openai/fake-model", ["k" * 64], opro_spend(), 1)
    BatchStateFile(tmp_path / "run").save([entry])
    with pytest.raises(BatchStateError, match="--resume"):
        await run(tmp_path, fake)
    assert fake.creates == 0


def opro_spend() -> opro.engine.spend.Spend:  # type: ignore[name-defined]
    from opro.engine.spend import Spend

    return Spend(1, 10, 10, 0.0)


@pytest.mark.parametrize(
    ("max_requests", "lines_per_batch", "sizes"),
    [(10, 100, [10, 10, 4]), (50_000, 7, [7, 7, 7, 3])],
)
async def test_batches_respect_the_vendor_limits(
    fake: FakeOpenAIBatchServer,
    tmp_path: Path,
    max_requests: int,
    lines_per_batch: int,
    sizes: list[int],
) -> None:
    """At most `max_requests` requests and `max_bytes` bytes per batch (the file's lines)."""
    from opro.engine.batch import BatchRunner
    from opro.engine.batch_evaluate import pending_requests
    from opro.providers.batch import Limits, batch_api

    async with Engine(cache_dir=tmp_path / "cache", retry=opro.RetryPolicy(timeout=5.0)) as eng:
        model = scorer(eng, fake)
        api = batch_api(model.provider)
        pending = pending_requests(model, [(INSTRUCTIONS, EXAMPLES)])
        longest = max(len(api.line(k, r)) + 1 for k, r in pending.items())
        api.limits = Limits(max_requests=max_requests, max_bytes=longest * lines_per_batch)
        runner = BatchRunner(model, tmp_path / "run", api=api, sleep=Sleeps())
        outcome = await runner.run(pending)
    assert [len(b.lines) for b in fake.batches.values()] == sizes
    assert outcome.batches == len(sizes) and len(outcome.answered) == 24


async def test_a_resumed_batch_does_not_use_up_the_rounds_of_new_pairs(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    """An earlier session's batch of a later round is collected; pairs it did not hold are
    still sent (rounds count per request, not per session)."""
    fake.control.hold = True
    retry = opro.RetryPolicy(timeout=5.0)
    async with Engine(cache_dir=tmp_path / "cache", retry=retry) as engine:
        task = asyncio.create_task(
            evaluate_in_batches(
                engine, INSTRUCTIONS[:1], EXAMPLES, scorer(engine, fake),
                run_dir=tmp_path / "run", sleep=Sleeps(),
            )
        )  # fmt: skip
        await fake.polled.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    state = BatchStateFile(tmp_path / "run")
    [entry] = state.load()
    entry.round = 5
    state.save([entry])
    fake.control.hold = False
    report = await run(tmp_path, fake, BatchSettings(rounds=1), resume=True)
    assert fake.creates == 2 and [len(b.lines) for b in fake.batches.values()] == [12, 12]
    assert report.totals.errors == 0 and report.totals.calls == 24


async def test_a_failed_poll_is_retried_with_backoff(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    fake.control.fail_polls = 2
    sleeps = Sleeps()
    report = await run(tmp_path, fake, sleeps=sleeps)
    assert report.totals.calls == 24 and fake.creates == 1
    assert sleeps.waits == [5.0, 10.0, 20.0]  # two 503s, then validating -> completed
