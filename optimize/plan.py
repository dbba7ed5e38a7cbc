"""Upper bounds of an OPRO run's calls, tokens and cost, before anything is spent.

Built on `engine.plan`: the starting instructions are planned exactly (rendered and looked up
in the cache), every later step at its worst case.
"""

from __future__ import annotations

import random

from opro.engine.model import Model
from opro.engine.plan import Plan, plan_evaluation, price_plan
from opro.optimize.loop import OptimizeConfig
from opro.optimize.metaprompt import Scored
from opro.optimize.problem import PromptProblem
from opro.providers.types import Request

# A candidate may be at most 500 characters (the paper's filter): at most this many tokens.
CANDIDATE_TOKENS = 500 // 4 + 1


def plan_optimization(
    problem: PromptProblem, optimizer: Model, cfg: OptimizeConfig
) -> tuple[Plan, Plan]:
    """Upper-bound plans for an OPRO run: (scorer calls, optimizer calls).

    The starting instructions are planned exactly (rendered and looked up in the cache);
    every later candidate is assumed new, as long as the longest allowed instruction, and
    scored on the whole training split; the final table scores `test_top` solutions plus the
    baselines on every split; the meta-prompt is taken at its fullest (`max_shown` earlier
    solutions of the longest allowed length) for every step.
    """
    scorer = problem.scorer
    scorer_plan = plan_evaluation(
        problem.initial_solutions(),
        problem.data.train,
        scorer,
        position=problem.position,
        qa_framing=problem.qa_framing,
    )
    filler = "x" * (4 * CANDIDATE_TOKENS)
    per_candidate = plan_evaluation(
        [filler],
        problem.data.train,
        scorer,
        position=problem.position,
        qa_framing=problem.qa_framing,
    )
    final_pairs = 0
    for split_name in problem.splits:
        final_pairs += (cfg.test_top + len(problem.baselines())) * len(problem.examples(split_name))
    validations = cfg.steps // cfg.eval_every if "validation" in problem.splits else 0
    final_pairs += validations * len(problem.examples("validation"))
    per_pair_in = per_candidate.est_tokens_in / max(1, per_candidate.calls)
    extra_pairs = cfg.steps * cfg.candidates_per_step * per_candidate.pairs + final_pairs
    scorer_plan.pairs += extra_pairs
    scorer_plan.calls += extra_pairs
    scorer_plan.est_tokens_in += int(per_pair_in * extra_pairs)
    scorer_plan.max_tokens_out += scorer.decoding.max_tokens * extra_pairs
    price_plan(scorer_plan, scorer)

    opt_plan = Plan()
    history = [Scored(filler, 1.0, 0)] * cfg.meta.max_shown
    text = problem.meta_prompt(history, cfg.meta, random.Random(0)).text
    request = Request(
        prompt=text, max_tokens=optimizer.decoding.max_tokens, n=cfg.candidates_per_step
    )
    opt_plan.pairs = opt_plan.calls = cfg.steps * cfg.candidates_per_step
    opt_plan.est_tokens_in = cfg.steps * cfg.candidates_per_step * (len(text) // 4 + 1)
    opt_plan.max_tokens_out = cfg.steps * request.max_tokens * request.n
    price_plan(opt_plan, optimizer)
    return scorer_plan, opt_plan
