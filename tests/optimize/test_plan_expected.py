"""The optimizer's expected calls: one request per step when the provider takes `n` (the
plan's stand-in says what the real provider does), N otherwise; the worst case is unchanged."""

from __future__ import annotations

from opro.engine.engine import Engine
from opro.engine.model import Decoding
from opro.engine.plan import plan_model
from opro.optimize.loop import OptimizeConfig
from opro.optimize.plan import plan_optimization
from opro.optimize.problem import PromptProblem
from opro.tasks.datasets import load_task


async def test_expected_optimizer_requests_follow_the_real_providers_n() -> None:
    task = load_task("synthetic/boolean_expressions")
    cfg = OptimizeConfig(steps=3, candidates_per_step=4, test_top=0)
    async with Engine(use_cache=False) as engine:
        scorer = engine.model("simulated/x")
        problem = PromptProblem(engine, scorer, task)
        plans = {}
        for spec in ("openai/gpt-4o-mini", "anthropic/claude-3-5-haiku"):
            optimizer = plan_model(spec, cache=None, decoding=Decoding(max_tokens=64))
            plans[spec] = plan_optimization(problem, optimizer, cfg)[1]
    takes_n, splits_n = plans["openai/gpt-4o-mini"], plans["anthropic/claude-3-5-haiku"]
    assert takes_n.requests == 3 and splits_n.requests == 12
    assert takes_n.calls == splits_n.calls == 12  # answers, as the dry run counts them
    # Sent once per step with `n`, the prompt is expected once; the bound still pays it N times.
    assert takes_n.est_tokens_in * 4 <= takes_n.worst_tokens_in
    assert takes_n.est_tokens_out == splits_n.est_tokens_out
