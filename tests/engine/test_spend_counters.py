"""One spend type: every counter that carries calls, tokens and cost holds a `Spend`.

The model's live stats, an evaluation's per-instruction scores and totals, a solution's
score and the optimizer's step and run totals all hold the same frozen `Spend`, and add it
with `+`; so they cannot disagree, and the run's reported total is what the models charged.
The JSON of reports keeps its flat field names.
"""

from __future__ import annotations

import random
from pathlib import Path

from opro.engine.budget import Budget
from opro.engine.engine import Engine
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Decoding, Model, Price
from opro.engine.retry import RetryPolicy
from opro.engine.spend import Spend
from opro.engine.tokens import worst_case_usage
from opro.optimize.loop import OptimizeConfig, optimize
from opro.optimize.problem import PromptProblem
from opro.providers.base import Provider
from opro.providers.errors import TransientError
from opro.providers.simulated import SimulatedProvider
from opro.providers.types import Completion, Request, Usage
from opro.tasks import load_task
from opro.tasks.types import Example
from opro.testing.virtual_time import run

PRICE = Price(input_per_m=2.0, output_per_m=8.0)


def simulated(engine: Engine, name: str, max_tokens: int = 256) -> Model:
    """A priced simulated model on the engine's cache (built directly, not by name)."""
    return Model(
        SimulatedProvider(name),
        limiter=ConnectionLimiter(LimitConfig()),
        retry=engine.retry,
        cache=engine.cache,
        decoding=Decoding(max_tokens=max_tokens),
        price=PRICE,
    )


def same(a: Spend, b: Spend) -> bool:
    """Equal counts, and equal cost up to the order the floats were added in."""
    return a.covers(b) and b.covers(a)


class DropsFirst(Provider):
    """Drops the connection on its first call (maybe billed), then answers every call."""

    name = "drops"

    def __init__(self) -> None:
        super().__init__("m")
        self.sent = 0

    async def complete(self, request: Request) -> Completion:
        self.sent += 1
        if self.sent == 1:
            raise TransientError("connection dropped")  # no status: billed at the worst case
        return Completion(("True",) * request.n, Usage(12, 3 * request.n), ("stop",) * request.n)


def test_model_stats_hold_what_the_budget_settled() -> None:
    provider = DropsFirst()
    budget = Budget(max_usd=1.0)
    model = Model(
        provider,
        limiter=ConnectionLimiter(LimitConfig()),
        retry=RetryPolicy(base_delay=1.0, max_attempts=3),
        cache=None,
        price=PRICE,
        budget=budget,
        rng=random.Random(0),
    )
    request = model.request("Is 3 odd?")

    async def main() -> None:
        await model.generate(request)
        await model.generate(model.request("Is 4 odd?"))

    run(main())
    worst = worst_case_usage(request)
    dropped = Spend.of(worst, PRICE.cost(worst))
    answered = Spend.of(Usage(12, 3), PRICE.cost(Usage(12, 3)))
    assert model.stats.spend == budget.spent == dropped + answered + answered
    assert model.stats.calls == provider.sent == 3
    assert (model.stats.retries, model.stats.failures) == (1, 0)


async def test_report_counters_are_spends_and_keep_their_json_fields(tmp_path: Path) -> None:
    examples = [Example(f"Is {i} odd? Answer True or False.", str(i % 2 == 1)) for i in range(6)]
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        scorer = simulated(engine, "s")
        report = await engine.evaluate(["", "Be brief.", ""], examples, scorer)
    first, second, repeat = report.instructions
    assert isinstance(first.spend, Spend) and isinstance(report.totals.spend, Spend)
    assert repeat.duplicate_of == 0 and repeat.spend == first.spend
    # Totals count each distinct instruction once, and equal what the model was charged.
    assert same(report.totals.spend, first.spend + second.spend)
    assert same(report.totals.spend, scorer.stats.spend)
    assert report.totals.calls == 12 and report.totals.cost_usd > 0
    data = report.to_dict()  # the documented shape of `opro evaluate --out`
    assert set(data["instructions"][0]) == {
        "instruction", "canonical", "duplicate_of", "accuracy", "correct", "accuracy_reference",
        "correct_reference", "truncated", "n", "errors", "skipped", "calls", "cache_hits",
        "tokens_in", "tokens_out", "cost_usd", "error_messages", "wrong",
    }  # fmt: skip
    assert set(data["totals"]) == {
        "pairs", "calls", "cache_hits", "cache_unreadable", "cache_write_errors", "errors",
        "skipped", "n429", "tokens_in", "tokens_out", "cost_usd", "wall_s",
    }  # fmt: skip
    assert data["totals"]["tokens_in"] == scorer.stats.spend.tokens_in
    assert data["instructions"][1]["cost_usd"] == second.spend.cost_usd


async def test_a_runs_totals_are_what_its_models_were_charged(tmp_path: Path) -> None:
    task = load_task("synthetic/boolean_expressions", size=40)
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        scorer = simulated(engine, "s")
        optimizer = simulated(engine, "o", max_tokens=64)
        problem = PromptProblem(engine, scorer, task, validation_fraction=0.2)
        cfg = OptimizeConfig(steps=3, candidates_per_step=3, eval_every=1, test_top=2)
        result = await optimize(problem, optimizer, cfg, run_dir=tmp_path / "run")
    charged = scorer.stats.spend + optimizer.stats.spend
    assert same(result.totals.spend, charged) and charged.calls > 0
    saved = result.to_dict()["totals"]
    assert set(saved) == {"calls", "cache_hits", "errors", "tokens_in", "tokens_out", "cost_usd"}
    assert (saved["calls"], saved["tokens_in"]) == (charged.calls, charged.tokens_in)
