"""One token estimator (`engine.tokens`): an expected count for plans and rate limits, and
the budget's worst case, a true upper bound; the dry run's "at most" is that same bound."""

from __future__ import annotations

import pytest

from opro.engine.engine import Engine
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Model, Price
from opro.engine.tokens import MESSAGE_OVERHEAD_TOKENS, expected_usage, worst_case_usage
from opro.optimize.loop import OptimizeConfig
from opro.optimize.plan import plan_optimization
from opro.optimize.problem import PromptProblem
from opro.providers.simulated import SimulatedProvider
from opro.providers.types import Message, Request
from opro.tasks.datasets import Task
from opro.tasks.prompts import render_prompt
from opro.tasks.types import Example

START = "请一步一步地思考。"
TEXTS = ["", "a", "Is 3 odd?", "héllo wörld", "三加四等于几?", "emoji 🙂🙂 " * 20]


def test_the_worst_case_is_bytes_plus_a_message_allowance() -> None:
    text = "三加四等于几?"
    usage = worst_case_usage(Request(prompt=text, max_tokens=7, n=3))
    assert usage.input_tokens == len(text.encode()) + MESSAGE_OVERHEAD_TOKENS == 6 * 3 + 1 + 16
    assert usage.output_tokens == 21
    chat = Request(messages=(Message("system", "ab"), Message("user", "c")), max_tokens=5)
    assert worst_case_usage(chat).input_tokens == 2 + 1 + 2 * MESSAGE_OVERHEAD_TOKENS


@pytest.mark.parametrize("text", TEXTS)
def test_the_expected_count_never_exceeds_the_worst_case(text: str) -> None:
    request = Request(prompt=text, max_tokens=9, n=2)
    expected, worst = expected_usage(request), worst_case_usage(request)
    assert expected.input_tokens <= worst.input_tokens
    assert expected.output_tokens == worst.output_tokens == 18


async def test_the_dry_runs_most_is_what_the_budget_would_reserve() -> None:
    # Chinese questions take three UTF-8 bytes a character: four times an estimate of four
    # characters a token (what the optimize plan's "at most" was) falls short of the bound
    # the budget reserves for the same calls.
    examples = tuple(
        Example(f"{i}加{i + 1}等于几?请只回答数字。" * 30, str(2 * i + 1)) for i in range(10)
    )
    task = Task("sums-zh", examples, "number", default_train_fraction=0.5)
    price = Price(input_per_m=1.0, output_per_m=1.0)
    async with Engine(use_cache=False) as engine:
        scorer = Model(
            SimulatedProvider("s"),
            limiter=ConnectionLimiter(LimitConfig()),
            retry=engine.retry,
            cache=None,
            price=price,
        )
        problem = PromptProblem(engine, scorer, task, starting=[START])
        plan, _ = plan_optimization(problem, scorer, OptimizeConfig(steps=0, test_top=0))
    # What the plan counts with no steps: the start on train, then the final table's
    # baselines (the start and "Let's think step by step.") on train and test.
    pairs = [(START, ex) for ex in problem.data.train]
    pairs += [
        (ins, ex)
        for ins in problem.baselines()
        for split in ("train", "test")
        for ex in problem.examples(split)
    ]
    reserved = 0.0
    for ins, ex in pairs:
        prompt = render_prompt(ins, ex.input, problem.position, qa_framing=problem.qa_framing)
        reserved += price.cost(worst_case_usage(scorer.request(prompt)))
    assert plan.calls == len(pairs) == 25
    assert plan.worst_cost_usd is not None and plan.worst_cost_usd >= reserved
    assert plan.est_cost_usd is not None and plan.est_cost_usd < reserved
