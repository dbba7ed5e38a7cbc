"""What an evaluation would cost, computed before anything is spent (`--dry-run`).

It renders every (canonical instruction, example) prompt exactly as `evaluate` would and
checks the cache for it, so the count of calls is exact; tokens come from `engine.tokens`
(the expected count, and `max_tokens` as the ceiling of each answer), and cost is shown both
as that estimate and as the budget's worst case (the same bound the budget reserves).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opro.engine.dedup import dedupe
from opro.engine.model import Model
from opro.engine.tokens import expected_usage, worst_case_usage
from opro.tasks.prompts import Position, render_prompt
from opro.tasks.types import Example


@dataclass(slots=True)
class Plan:
    pairs: int = 0
    cached: int = 0
    calls: int = 0
    est_tokens_in: int = 0
    max_tokens_out: int = 0
    worst_tokens_in: int = 0  # the budget's bound of the input tokens
    est_cost_usd: float | None = 0.0
    worst_cost_usd: float | None = 0.0

    def describe(self) -> str:
        def usd(x: float | None) -> str:
            return "unknown (no price)" if x is None else f"${x:.4f}"

        return (
            f"{self.pairs} pairs: {self.cached} cached, {self.calls} calls to make; "
            f"~{self.est_tokens_in} input tokens + at most {self.max_tokens_out} output tokens; "
            f"estimated cost {usd(self.est_cost_usd)}, at most {usd(self.worst_cost_usd)}"
        )


def plan_evaluation(
    instructions: Sequence[str],
    examples: Sequence[Example],
    scorer: Model,
    *,
    position: Position = "Q_begin",
    qa_framing: bool | None = None,
) -> Plan:
    unique, _ = dedupe(instructions)
    plan = Plan()
    for canon in unique:
        for ex in examples:
            request = scorer.request(
                render_prompt(canon, ex.input, position, qa_framing=qa_framing)
            )
            plan.pairs += 1
            if scorer.cache is not None and scorer.cache.get(scorer.key(request)) is not None:
                plan.cached += 1
                continue
            plan.calls += 1
            expected, worst = expected_usage(request), worst_case_usage(request)
            plan.est_tokens_in += expected.input_tokens
            plan.max_tokens_out += worst.output_tokens
            plan.worst_tokens_in += worst.input_tokens
    price_plan(plan, scorer)
    return plan


def price_plan(plan: Plan, model: Model) -> None:
    """Fill in a plan's estimated and worst-case cost from the model's price."""
    if model.price is None:
        plan.est_cost_usd = plan.worst_cost_usd = None
        return
    plan.est_cost_usd = model.price.cost_of(plan.est_tokens_in, plan.max_tokens_out)
    plan.worst_cost_usd = model.price.cost_of(plan.worst_tokens_in, plan.max_tokens_out)
