"""The budget: reservations, settlement, and that a run can never overshoot it."""

from __future__ import annotations

import asyncio
import random

import pytest

from opro.engine.budget import Budget, BudgetExceeded
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Model, ModelCallError, Price
from opro.engine.prices import known_price, parse_price
from opro.engine.retry import RetryPolicy
from opro.engine.spend import Spend
from opro.engine.tokens import worst_case_usage
from opro.providers.base import Provider
from opro.providers.errors import ProviderError, TransientError
from opro.providers.types import Completion, Message, Request, Usage
from opro.testing.virtual_time import run


class Billing(Provider):
    """Answers after `latency` seconds with a fixed usage; can fail first."""

    name = "billing"

    def __init__(self, usage: Usage, script: list[ProviderError] | None = None) -> None:
        super().__init__("m")
        self.usage = usage
        self.script = list(script or [])
        self.sent = 0

    async def complete(self, request: Request) -> Completion:
        self.sent += 1
        await asyncio.sleep(1.0)
        if self.script:
            raise self.script.pop(0)
        return Completion(("ok",), self.usage)


def model(provider: Provider, budget: Budget, price: Price, concurrency: int = 8) -> Model:
    return Model(
        provider,
        limiter=ConnectionLimiter(LimitConfig(max_concurrency=concurrency)),
        retry=RetryPolicy(base_delay=0.5, max_attempts=5),
        cache=None,
        price=price,
        rng=random.Random(0),
        budget=budget,
    )


def test_worst_case_bounds_bytes_and_answers() -> None:
    request = Request(prompt="héllo", max_tokens=10, n=3)
    assert worst_case_usage(request) == Usage(6 + 16, 30)
    chat = Request(messages=(Message("system", "ab"), Message("user", "c")), max_tokens=5)
    assert worst_case_usage(chat) == Usage(2 + 16 + 1 + 16, 5)


def test_budget_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="> 0"):
        Budget(max_usd=0)
    with pytest.raises(ValueError, match="token budget must be an integer from 1"):
        Budget(max_tokens=-1)


@pytest.mark.parametrize("concurrency", [1, 4, 64])
def test_concurrent_calls_never_overshoot_the_cap(concurrency: int) -> None:
    budget = Budget(max_usd=0.01)
    provider = Billing(Usage(40, 8))
    m = model(provider, budget, Price(10.0, 30.0), concurrency)

    async def one(i: int) -> str:
        try:
            await m.generate(m.request(f"prompt number {i}"))
            return "ok"
        except BudgetExceeded:
            return "stopped"

    async def main() -> list[str]:
        return list(await asyncio.gather(*(one(i) for i in range(200))))

    results = run(main())
    assert "stopped" in results and "ok" in results
    billed = provider.sent * Price(10.0, 30.0).cost(Usage(40, 8))
    assert billed <= 0.01
    assert budget.spent_usd == pytest.approx(billed)
    assert budget.reserved_usd == pytest.approx(0.0) and budget.reserved_tokens == 0


def test_retries_are_paid_from_the_same_budget() -> None:
    budget = Budget(max_tokens=10_000)
    provider = Billing(Usage(10, 2), script=[TransientError("cut", status=None)] * 2)
    m = model(provider, budget, Price())
    run(m.generate(m.request("q")))
    worst = worst_case_usage(m.request("q"))
    # Two ambiguous failures (no status: maybe billed) charge the worst case each.
    assert budget.spent_tokens == 2 * (worst.input_tokens + worst.output_tokens) + 12


def test_an_error_status_is_not_charged() -> None:
    budget = Budget(max_tokens=10_000)
    provider = Billing(Usage(10, 2), script=[TransientError("503", status=503)])
    m = model(provider, budget, Price())
    run(m.generate(m.request("q")))
    assert budget.spent_tokens == 12


def test_a_call_that_cannot_fit_is_never_sent() -> None:
    budget = Budget(max_tokens=50)
    provider = Billing(Usage(1, 1))
    m = model(provider, budget, Price())
    with pytest.raises(BudgetExceeded, match="budget reached"):
        run(m.generate(Request(prompt="x" * 100, max_tokens=10)))
    assert provider.sent == 0


def test_budget_stops_are_not_call_errors() -> None:
    budget = Budget(max_tokens=1)
    m = model(Billing(Usage(1, 1)), budget, Price())
    with pytest.raises(BudgetExceeded):
        run(m.generate(m.request("q")))
    assert not issubclass(BudgetExceeded, ModelCallError)


def test_price_table_and_overrides() -> None:
    assert known_price("openai/gpt-4o-mini-2024-07-18") == Price(0.15, 0.60)
    assert known_price("openai/gpt-4o") == Price(2.50, 10.00)
    assert known_price("gemini/gemini-2.0-flash") == known_price("google/gemini-2.0-flash")
    assert known_price("local/smollm2") == Price(0.0, 0.0)
    assert known_price("simulated/x") == Price(0.0, 0.0)
    assert known_price("openai/some-future-model") is None
    assert parse_price("0.15,0.6") == Price(0.15, 0.6)
    for bad in ("1", "a,b", "-1,2", "1,2,3"):
        with pytest.raises(ValueError, match="IN,OUT"):
            parse_price(bad)


# -- a run's budget: prior spend, what refused and failed callers paid, robust settling ---


def test_prior_spend_counts_against_the_cap() -> None:
    budget = Budget(max_usd=0.01, spent=Spend(calls=7, cost_usd=0.0095))
    m = model(Billing(Usage(40, 8)), budget, Price(10.0, 30.0))
    with pytest.raises(BudgetExceeded, match=r"\$0.0095 of \$0.01"):
        run(m.generate(m.request("q")))
    assert budget.spent == Spend(calls=7, cost_usd=0.0095)
    with pytest.raises(ValueError, match="non-negative"):
        Budget(spent=Spend(cost_usd=-1.0))
    with pytest.raises(ValueError, match="must be a number > 0"):
        Budget(max_usd=float("nan"))


def test_a_refused_retry_reports_what_the_earlier_attempts_paid() -> None:
    request = Request(prompt="q", max_tokens=4)
    worst = worst_case_usage(request)
    # Room for one worst case only: the dropped first attempt is charged it, then the
    # retry cannot fit. The refusal carries the paid attempt, so reports can count it.
    budget = Budget(max_tokens=worst.input_tokens + worst.output_tokens + 1)
    provider = Billing(Usage(1, 1), script=[TransientError("dropped", status=None)])
    m = model(provider, budget, Price(1.0, 1.0))
    with pytest.raises(BudgetExceeded) as stopped:
        run(m.generate(request))
    assert provider.sent == 1
    assert stopped.value.paid == Spend.of(worst, Price(1.0, 1.0).cost(worst))


def test_a_final_failure_reports_what_its_attempts_paid() -> None:
    request = Request(prompt="q", max_tokens=4)
    worst = worst_case_usage(request)
    script: list[ProviderError] = [
        TransientError("cut", status=None),
        TransientError("x", status=503),
    ]
    m = model(Billing(Usage(1, 1), script=script * 3), Budget(), Price())
    m.retry = RetryPolicy(base_delay=0.5, max_attempts=2)
    with pytest.raises(ModelCallError) as failed:
        run(m.generate(request))
    assert failed.value.attempts == 2
    assert failed.value.paid == Spend(2, worst.input_tokens, worst.output_tokens, 0.0)


def test_settle_never_credits_and_charges_what_the_server_billed_above_the_bound() -> None:
    budget = Budget(max_usd=1.0)

    async def main() -> None:
        worst = Spend(1, 100, 10, 0.001)
        for bad in (Spend(1, -5, 0, 0.0), Spend(1, 1, 1, float("nan")), Spend(1, 0, 0, -1.0)):
            budget.settle(await budget.reserve(worst), bad)
        assert budget.spent == worst.times(3)  # each charged the worst case, none credited
        budget.settle(await budget.reserve(worst), Spend(1, 500, 10, 0.005))
        assert budget.spent == worst.times(3) + Spend(1, 500, 10, 0.005)
        assert budget.over_bound == 1 and budget.reserved == Spend()

    run(main())
