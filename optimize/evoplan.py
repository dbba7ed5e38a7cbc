"""Upper bounds of an EvoPrompt run (GA or DE), before anything is spent.

The scorer side is `plan.plan_optimization`'s for an OPRO run of one more step at N
candidates per step: a generation scores at most N new prompts, and step 0 at most N induced
ones besides the given instructions. The optimizer side: step 0 asks once for each
missing member, at most `1 + RESAMPLE_ROUNDS` times, and
every generation asks N times with a GA or DE prompt holding parents of the longest
allowed length.
"""

from __future__ import annotations

from dataclasses import replace

from opro.engine.model import Model
from opro.engine.plan import Plan, price_plan
from opro.engine.tokens import expected_tokens_of_chars, worst_tokens_of_bytes
from opro.optimize.candidates import MAX_CHARS
from opro.optimize.evoprompt import INDUCTION_EXAMPLES
from opro.optimize.evoprompt_prompts import de_prompt, ga_prompt, induction_prompt
from opro.optimize.loop import RESAMPLE_ROUNDS, OptimizeConfig
from opro.optimize.plan import plan_optimization
from opro.optimize.problem import PromptProblem


def plan_evolution(
    problem: PromptProblem, optimizer: Model, cfg: OptimizeConfig
) -> tuple[Plan, Plan]:
    """Upper-bound plans for a GA or DE run: (scorer calls, optimizer calls)."""
    n = cfg.population_size
    as_opro = replace(
        cfg, strategy="opro", population=None, steps=cfg.steps + 1, candidates_per_step=n
    )
    scorer_plan, _ = plan_optimization(problem, optimizer, as_opro)
    missing = max(0, n - len(set(problem.initial_solutions())))
    longest = sorted(problem.data.train, key=lambda e: len(e.input) + len(e.target))
    induction = induction_prompt(longest[-INDUCTION_EXAMPLES:])
    filler = "x" * MAX_CHARS
    child = max(ga_prompt(filler, filler), de_prompt(filler, filler, filler, filler), key=len)
    asks = [(induction, missing * (1 + RESAMPLE_ROUNDS))] if missing else []
    asks.append((child, cfg.steps * n))
    opt_plan = Plan()
    opt_plan.pairs = opt_plan.calls = sum(count for _, count in asks)
    opt_plan.est_tokens_in = sum(expected_tokens_of_chars(len(p)) * k for p, k in asks)
    opt_plan.worst_tokens_in = sum(worst_tokens_of_bytes(len(p.encode())) * k for p, k in asks)
    opt_plan.max_tokens_out = opt_plan.calls * optimizer.decoding.max_tokens
    price_plan(opt_plan, optimizer)
    return scorer_plan, opt_plan
