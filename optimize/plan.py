"""Upper bounds of an OPRO run's calls, tokens and cost, before anything is spent.

Built on `engine.plan`: the starting instructions are planned exactly (rendered and looked up
in the cache), every later step at its worst case.
"""

from __future__ import annotations

import random
from dataclasses import replace

from opro.engine.model import Model
from opro.engine.plan import Plan, plan_evaluation, price_plan
from opro.optimize.loop import OptimizeConfig
from opro.optimize.metaprompt import Scored, shown_cap
from opro.optimize.problem import PromptProblem
from opro.optimize.protocol import resolve_meta
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
    solutions of the longest allowed length, or with no cap every solution that can have
    been scored before the step) for every step.
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
    # Every exemplar rule shows at most `exemplars` examples: plan with a full random draw.
    meta = replace(resolve_meta(cfg.meta, optimizer.spec, problem), exemplar_selection="random")
    cap = shown_cap(meta)
    # Uncapped (the pretrained style under --protocol paper), step s lists at most every
    # solution scored before it: the starting ones plus N per earlier step.
    n_start = len(problem.initial_solutions())
    listed = [
        cap if cap is not None else n_start + (s - 1) * cfg.candidates_per_step
        for s in range(1, cfg.steps + 1)
    ]
    longest = max(listed, default=0)
    text = problem.meta_prompt([Scored(filler, 1.0, 0)] * longest, meta, random.Random(0)).text
    request = Request(
        prompt=text, max_tokens=optimizer.decoding.max_tokens, n=cfg.candidates_per_step
    )
    opt_plan.pairs = opt_plan.calls = cfg.steps * cfg.candidates_per_step
    if cap is not None:
        prompt_tokens = cfg.steps * (len(text) // 4 + 1)
    else:
        empty = len(problem.meta_prompt([], meta, random.Random(0)).text)
        per_entry = (len(text) - empty) / max(1, longest)
        prompt_tokens = sum(int((empty + per_entry * n) // 4) + 1 for n in listed)
    opt_plan.est_tokens_in = cfg.candidates_per_step * prompt_tokens
    opt_plan.max_tokens_out = cfg.steps * request.max_tokens * request.n
    price_plan(opt_plan, optimizer)
    return scorer_plan, opt_plan
