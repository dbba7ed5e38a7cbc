"""Upper bounds of an OPRO run's calls, tokens and cost, before anything is spent.

Built on `engine.plan`: the starting instructions are planned exactly (rendered and looked up
in the cache), every later step at its worst case. Tokens come from `engine.tokens` (the one
estimator); a later candidate is taken as `MAX_CHARS` single-byte characters for the worst
case and as a typical instruction (`TYPICAL_CANDIDATE`) for the expected input. Expected
output tokens come from `engine.estimate`: a later candidate's answers are expected to be as
long as the cached answers the plan saw (of any instruction), else the stated default of
the task's answer format; an optimizer answer has a stated default.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

from opro.engine.estimate import (
    MIN_EVIDENCE,
    OutputEstimate,
    default_output,
    from_stats,
    optimizer_default,
)
from opro.engine.model import Model
from opro.engine.plan import Plan, add_output, plan_evaluation, price_plan
from opro.engine.tokens import expected_tokens_of_chars, worst_tokens_of_bytes
from opro.optimize.candidates import MAX_CHARS
from opro.optimize.loop import OptimizeConfig
from opro.optimize.metaprompt import Scored, shown_cap
from opro.optimize.problem import PromptProblem
from opro.optimize.protocol import resolve_meta

# What a later candidate is expected to look like (OPRO's instructions run one to three
# sentences), for its expected input tokens; the worst case takes the longest allowed.
TYPICAL_CANDIDATE = "Read the question carefully, then give the answer it asks for."


def later_candidates(plan: Plan, max_tokens: int) -> OutputEstimate:
    """Expected answers of instructions not written yet: as long as the answers the plan
    found cached (of the starting instructions), else the task's stated default."""
    evidence = plan.evidence
    if evidence.n >= MIN_EVIDENCE:
        source = "calibration" if plan.evidence_calibrated == evidence.n else "cache"
        detail = f"{evidence.n} answers of the starting instructions"
        return from_stats(evidence, max_tokens, source, detail)
    return default_output("", plan.answer_type, max_tokens)


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
    filler = "x" * MAX_CHARS  # the longest candidate the filters let through
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
    typical = plan_evaluation(
        [TYPICAL_CANDIDATE],
        problem.data.train,
        scorer,
        position=problem.position,
        qa_framing=problem.qa_framing,
        check_cache=False,
    )
    per_pair_in = typical.est_tokens_in / max(1, typical.calls)
    per_pair_worst = per_candidate.worst_tokens_in / max(1, per_candidate.calls)
    extra_pairs = cfg.steps * cfg.candidates_per_step * per_candidate.pairs + final_pairs
    scorer_plan.pairs += extra_pairs
    scorer_plan.calls += extra_pairs
    scorer_plan.est_tokens_in += int(per_pair_in * extra_pairs)
    scorer_plan.worst_tokens_in += math.ceil(per_pair_worst * extra_pairs)
    scorer_plan.max_tokens_out += scorer.decoding.max_tokens * extra_pairs
    later = later_candidates(scorer_plan, scorer.decoding.max_tokens)
    add_output(scorer_plan, later, extra_pairs)
    if extra_pairs:
        sources = [scorer_plan.output_source] if scorer_plan.output_source else []
        scorer_plan.output_source = "; ".join([*sources, f"later candidates: {later.label()}"])
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
    full = problem.meta_prompt([Scored(filler, 1.0, 0)] * longest, meta, random.Random(0)).text
    opt_plan.pairs = opt_plan.calls = cfg.steps * cfg.candidates_per_step
    # The meta-prompt of a step listing n solutions, in characters and in UTF-8 bytes: the
    # fullest one at a cap, else interpolated between the empty and the fullest listing.
    empty = problem.meta_prompt([], meta, random.Random(0)).text
    sizes = [(len(full), len(full.encode()))] * cfg.steps
    if cap is None:
        chars_per = (len(full) - len(empty)) / max(1, longest)
        bytes_per = (len(full.encode()) - len(empty.encode())) / max(1, longest)
        sizes = [
            (int(len(empty) + chars_per * n), math.ceil(len(empty.encode()) + bytes_per * n))
            for n in listed
        ]
    # Each of a step's N answers may be a call of its own (a server that ignores `n`).
    n = cfg.candidates_per_step
    # Expected: the listing as it really grows (up to the cap), of typical instructions,
    # sent once per step when the provider takes `n` (the worst case pays it N times).
    listing = problem.meta_prompt(
        [Scored(TYPICAL_CANDIDATE, 1.0, 0)] * longest, meta, random.Random(0)
    ).text
    typical_per = (len(listing) - len(empty)) / max(1, longest)
    grown = [n_start + (s - 1) * n for s in range(1, cfg.steps + 1)]
    shown = [k if cap is None else min(cap, k) for k in grown]
    per_step = 1 if optimizer.provider.supports_n else n
    opt_plan.requests = cfg.steps * per_step
    opt_plan.est_tokens_in = per_step * sum(
        expected_tokens_of_chars(int(len(empty) + typical_per * k)) for k in shown
    )
    opt_plan.worst_tokens_in = n * sum(worst_tokens_of_bytes(b) for _, b in sizes)
    opt_plan.max_tokens_out = cfg.steps * optimizer.decoding.max_tokens * n
    opt_plan.tokenizer = "estimated at 4 characters a token"
    answers = optimizer_default(optimizer.decoding.max_tokens)
    add_output(opt_plan, answers, opt_plan.calls)
    opt_plan.output_source = answers.label()
    price_plan(opt_plan, optimizer)
    return scorer_plan, opt_plan
