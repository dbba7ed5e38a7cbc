"""What a sweep would cost, per task and in total, before anything is spent (`--dry-run`).

Each task is planned as `opro optimize` / `opro evaluate` plan it (`optimize.plan`,
`engine.plan`): the same examples the sweep's runner would use, models built for planning
only (`engine.plan.plan_model`: no key, server or weights needed) with the role's resolved
max tokens, the sweep's cache for the cache hits and the evidence of answer lengths. The
plan line and the plan-vs-bill line at the end of a sweep come from these plans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from opro.engine.engine import Engine
from opro.engine.estimate import merge_sources
from opro.engine.model import Decoding, Model
from opro.engine.plan import Plan, plan_evaluation, plan_model
from opro.optimize.loop import OptimizeConfig
from opro.optimize.plan import plan_optimization
from opro.optimize.problem import PromptProblem
from opro.optimize.protocol import default_scorer_max_tokens
from opro.sweep.runner import OPTIMIZER_MAX_TOKENS, SweepRunner
from opro.sweep.settings import ModelSettings, SweepSettings
from opro.tasks import load_task
from opro.tasks.prompts import needs_qa_framing
from opro.tasks.splits import Split


@dataclass(frozen=True, slots=True)
class TaskPlan:
    task: str
    scorer: Plan
    optimizer: Plan | None = None


def _model(engine: Engine, spec: ModelSettings, max_tokens: int) -> Model:
    decoding = Decoding(temperature=spec.temperature, max_tokens=max_tokens, stop=spec.stop)
    return plan_model(
        spec.spec,
        cache=engine.cache,
        decoding=decoding,
        base_url=spec.base_url,
        api=spec.api,
        price=spec.price,
        budget=engine.budget,
    )


def plan_sweep(engine: Engine, settings: SweepSettings, names: Sequence[str]) -> list[TaskPlan]:
    """One plan per task (upper bounds for optimize, as `opro optimize --dry-run`)."""
    # The runner's own choice of examples per task (it only reads `settings`).
    shim: Any = SimpleNamespace(settings=settings)
    plans = []
    p = settings.problem
    for name in names:
        task = load_task(name, data_dir=settings.data_dir)
        prepared = SweepRunner._prepare(shim, task)
        max_tokens = settings.scorer.max_tokens or default_scorer_max_tokens(task.name)
        scorer = _model(engine, settings.scorer, max_tokens)
        if settings.evaluate is not None:
            assert not isinstance(prepared.examples, Split)
            framing = needs_qa_framing(p.position) if p.qa_framing is None else p.qa_framing
            plan = plan_evaluation(
                list(settings.evaluate.instructions),
                prepared.examples,
                scorer,
                position=p.position,
                qa_framing=framing,
            )
            plans.append(TaskPlan(name, plan))
            continue
        assert isinstance(prepared.examples, Split) and settings.optimizer is not None
        optimizer = _model(
            engine, settings.optimizer, settings.optimizer.max_tokens or OPTIMIZER_MAX_TOKENS
        )
        problem = PromptProblem(
            engine,
            scorer,
            task,
            data=prepared.examples,
            position=p.position,
            qa_framing=p.qa_framing,
            starting=p.starting,
            test_limit=p.test_limit,
        )
        s_plan, o_plan = plan_optimization(
            problem, optimizer, settings.optimize or OptimizeConfig()
        )
        plans.append(TaskPlan(name, s_plan, o_plan))
    return plans


_SUMMED = ("pairs", "cached", "calls", "est_tokens_in", "max_tokens_out", "worst_tokens_in")
_SUMMED_F = ("est_tokens_out", "est_out_low", "est_out_high")
_COSTS = ("est_cost_usd", "worst_cost_usd", "est_cost_low", "est_cost_high")


def total_plan(plans: Sequence[Plan]) -> Plan:
    """The sum of several plans (a cost is unknown when any plan's is)."""
    total = Plan(cache_checked=all(p.cache_checked for p in plans))
    for name in (*_SUMMED, *_SUMMED_F):
        setattr(total, name, sum(getattr(p, name) for p in plans))
    for name in _COSTS:
        values = [getattr(p, name) for p in plans]
        setattr(total, name, None if any(v is None for v in values) else sum(values))
    total.tokenizer = ", ".join(sorted({p.tokenizer for p in plans if p.tokenizer}))
    total.requests = sum(p.requests or p.calls for p in plans)
    total.output_source = merge_sources([p.output_source for p in plans if p.output_source])
    return total
