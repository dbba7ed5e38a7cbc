"""The run's spend ledger: what a crash can leave on disk always covers what was billed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from pathlib import Path

import pytest

from opro.engine.budget import Budget, BudgetExceeded
from opro.engine.ledger import (
    LEDGER,
    LedgerError,
    SpendLedger,
    recording,
    run_spend,
    stop_message,
)
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Decoding, Model, Price
from opro.engine.retry import RetryPolicy
from opro.engine.spend import Spend
from opro.engine.tokens import worst_case_usage
from opro.optimize.runlog import logged_spend
from opro.providers.base import Provider
from opro.providers.errors import TransientError
from opro.providers.types import Completion, Request, Usage

PRICE = Price(10.0, 30.0)


class Watched(SpendLedger):
    """A real ledger that also keeps the bound of its last stored write."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.bounds: list[Spend] = []

    def write(self, seq: int, settled: Spend, bound: Spend) -> None:
        super().write(seq, settled, bound)
        self.bounds.append(bound)


class Billing(Provider):
    """A server that bills when a request arrives, then maybe drops the answer.

    At that moment, the moment a kill -9 could strike before the client records anything,
    it checks that the journal on disk already covers everything billed so far.
    """

    name = "billing"

    def __init__(self, ledger: SpendLedger, rng: random.Random) -> None:
        super().__init__("m")
        self.ledger = ledger
        self.rng = rng
        self.billed = Spend()
        self.covered = 0

    async def complete(self, request: Request) -> Completion:
        usage = Usage(len(request.as_text()) // 4 + 1, 3)
        self.billed += Spend.of(usage, PRICE.cost(usage))
        on_disk = self.ledger.load()
        assert on_disk is not None and on_disk.covers(self.billed), (on_disk, self.billed)
        self.covered += 1
        await asyncio.sleep(self.rng.uniform(0, 0.002))
        if self.rng.random() < 0.2:
            raise TransientError("dropped after billing", status=None)
        return Completion(("ok",), usage)


def scorer(provider: Provider, budget: Budget, concurrency: int) -> Model:
    return Model(
        provider,
        limiter=ConnectionLimiter(LimitConfig(max_concurrency=concurrency)),
        retry=RetryPolicy(base_delay=0.0, max_delay=0.0, max_attempts=10),
        cache=None,
        decoding=Decoding(max_tokens=4),
        price=PRICE,
        rng=random.Random(1),
        budget=budget,
    )


@pytest.mark.parametrize("cap", [None, 0.02, 1.0])
@pytest.mark.parametrize("concurrency", [1, 16])
async def test_the_ledger_covers_every_billed_call_before_it_is_sent(
    tmp_path: Path, concurrency: int, cap: float | None
) -> None:
    ledger = Watched(tmp_path / LEDGER)
    budget = Budget(max_usd=cap)
    budget.record_to(ledger)
    provider = Billing(ledger, random.Random(concurrency))
    m = scorer(provider, budget, concurrency)

    async def one(i: int) -> None:
        with contextlib.suppress(BudgetExceeded):
            await m.generate(m.request(f"question number {i} " + "x" * (i % 7)))

    await asyncio.gather(*(one(i) for i in range(300)))
    assert provider.covered == provider.billed.calls > 50
    assert budget.spent.covers(provider.billed)  # dropped answers charged their worst case
    if cap is not None:
        assert provider.billed.cost_usd <= cap and budget.spent_usd <= cap
        assert all(b.cost_usd <= cap for b in ledger.bounds), [
            b for b in ledger.bounds if b.cost_usd > cap
        ]
    if cap is None or cap > budget.spent_usd * 2:  # far from a cap, writes are rare
        assert len(ledger.bounds) <= provider.billed.calls / 10
    await budget.flush()
    assert ledger.load() == budget.spent  # a clean end leaves the exact spend


async def test_a_crash_with_calls_in_flight_resumes_counting_their_worst_case(
    tmp_path: Path,
) -> None:
    request = Request(prompt="a question", max_tokens=8)
    worst = worst_case_usage(request)
    cost = Spend.of(worst, PRICE.cost(worst))
    budget = Budget(max_usd=1.0)
    budget.record_to(SpendLedger(tmp_path / LEDGER))
    held = [await budget.reserve(cost) for _ in range(3)]
    budget.settle(held[0], Spend.of(Usage(2, 1), PRICE.cost(Usage(2, 1))))
    # kill -9 now: two calls in flight, maybe billed. A new session counts them.
    after = Budget(max_usd=1.0)
    async with recording(after, tmp_path, resume=True):
        assert after.spent.covers(budget.spent + budget.reserved)
        assert after.spent_usd <= 1.0 / 32 + 3 * cost.cost_usd  # at most one write's headroom


async def test_resume_counts_the_recorded_spend_and_a_new_run_does_not(tmp_path: Path) -> None:
    earlier = Spend(calls=10, tokens_in=400, tokens_out=40, cost_usd=0.005)
    SpendLedger(tmp_path / LEDGER).write(1, earlier, earlier)
    budget = Budget(max_usd=0.0051)
    async with recording(budget, tmp_path, resume=True):
        assert budget.spent == earlier
        with pytest.raises(BudgetExceeded):
            budget.check(Spend(1, 10, 10, 0.0002))
    assert "run total $0.0050 of $0.0051 cap; resume with a higher --budget-usd" in (
        stop_message(budget, BudgetExceeded("x"))
    )
    fresh = Budget(max_usd=1.0)
    async with recording(fresh, tmp_path, resume=False):
        assert fresh.spent == Spend()
    # A session refused before any call leaves the ledger as it was.
    assert SpendLedger(tmp_path / LEDGER).load() == earlier


async def test_a_run_logged_before_the_ledger_existed_resumes_with_its_logged_spend(
    tmp_path: Path,
) -> None:
    steps = [
        {"step": i, "candidates": [], "totals": Spend(3, 30, 3, 0.001 * (i + 1)).to_dict()}
        for i in range(3)
    ]
    (tmp_path / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    assert logged_spend(tmp_path) == Spend(9, 90, 9, 0.006)
    budget = Budget()
    async with recording(budget, tmp_path, resume=True, earlier=lambda: logged_spend(tmp_path)):
        assert budget.spent.cost_usd == pytest.approx(0.006) and budget.spent.calls == 9
        assert run_spend(budget, tmp_path) == budget.spent
        assert run_spend(budget, tmp_path / "elsewhere") is None


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"format": 2, "settled": {}, "bound": {}}',
        '{"format": 1, "settled": {"calls": 1, "tokens_in": 1, "tokens_out": 1, "cost_usd": -1},'
        ' "bound": {"calls": 1, "tokens_in": 1, "tokens_out": 1, "cost_usd": 1}}',
        '{"format": 1, "settled": {"calls": true, "tokens_in": 1, "tokens_out": 1, '
        '"cost_usd": 1}, "bound": {"calls": 1, "tokens_in": 1, "tokens_out": 1, "cost_usd": 1}}',
        "[]",
    ],
)
def test_a_damaged_ledger_is_a_one_line_error_not_a_free_budget(tmp_path: Path, text: str) -> None:
    (tmp_path / LEDGER).write_text(text)
    with pytest.raises(LedgerError, match=r"is damaged.*move it aside"):
        SpendLedger(tmp_path / LEDGER).load()


def test_an_older_write_never_replaces_a_newer_one(tmp_path: Path) -> None:
    ledger = SpendLedger(tmp_path / LEDGER)
    assert ledger.load() is None
    ledger.write(2, Spend(2), Spend(5))
    ledger.write(1, Spend(1), Spend(3))
    assert ledger.load() == Spend(5)


async def test_a_ledger_that_cannot_be_written_stops_before_sending(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    budget = Budget(max_usd=1.0)
    budget.record_to(SpendLedger(blocker / "run" / LEDGER))  # a directory under a file
    with pytest.raises(BudgetExceeded, match="cannot record the run's spend") as stopped:
        await budget.reserve(Spend(1, 10, 10, 0.001))
    assert budget.reserved == Spend()
    assert "Not a directory" in stop_message(budget, stopped.value)
