"""What an evaluation would cost, computed before anything is spent (`--dry-run`).

It renders every (canonical instruction, example) prompt exactly as `evaluate` would and
checks the cache for it, so the count of calls is exact; tokens are estimated (about four
characters per prompt token, and `max_tokens` as the ceiling of each answer), and cost is
shown both as that estimate and as the budget's worst case.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..providers.types import Request, Usage
from ..tasks.prompts import Position, render_prompt
from ..tasks.types import Example
from .budget import worst_case_usage
from .dedup import dedupe
from .metaprompt import Scored, shown_cap
from .model import Model, estimate_tokens
from .protocol import resolve_meta

if TYPE_CHECKING:
    from .optimizer import OptimizeConfig
    from .problems import PromptProblem


@dataclass(slots=True)
class Plan:
    pairs: int = 0
    cached: int = 0
    calls: int = 0
    est_tokens_in: int = 0
    max_tokens_out: int = 0
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
    worst = Usage()
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
            plan.est_tokens_in += estimate_tokens(request) - request.max_tokens * request.n
            plan.max_tokens_out += request.max_tokens * request.n
            worst = worst + worst_case_usage(request)
    if scorer.price is None:
        plan.est_cost_usd = plan.worst_cost_usd = None
    else:
        plan.est_cost_usd = scorer.price.cost_of(plan.est_tokens_in, plan.max_tokens_out)
        plan.worst_cost_usd = scorer.price.cost(worst)
    return plan


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
    _price(scorer_plan, scorer)

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
    _price(opt_plan, optimizer)
    return scorer_plan, opt_plan


def _price(plan: Plan, model: Model) -> None:
    if model.price is None:
        plan.est_cost_usd = plan.worst_cost_usd = None
        return
    plan.est_cost_usd = model.price.cost_of(plan.est_tokens_in, plan.max_tokens_out)
    plan.worst_cost_usd = model.price.cost_of(4 * plan.est_tokens_in, plan.max_tokens_out)
