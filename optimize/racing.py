"""Racing (`--racing`): stop scoring a candidate once it cannot matter, with high confidence.

Why: the meta-prompt shows only the best `max_shown` earlier instructions (those at or above
`min_score`) and the final table only the top `test_top`. A candidate whose training accuracy
is, with high confidence, below the score it would need to enter either changes nothing the
optimizer sees next nor the final pick, so scoring it on every training example is wasted.

How, per step:

* the step's training order is a seeded permutation (`racing_seed(seed, step)`: a pure
  function, so a resumed step scores the same examples, all of them cache hits);
* `looks(N)` gives the cumulative sizes of the rounds, doubling from `first_round(N)` up to N;
  a round scores every surviving candidate on the round's new examples in ONE fan-out
  (`score_examples`), so the engine's concurrency is kept inside a round;
* after each round but the last, a candidate with s correct of n graded is stopped when its
  upper confidence bound `upper_bound(s, n, N, alpha)` is below `threshold(...)`.

The bound is exact and finite-population: the training set is fixed, so the candidate's
full-set correct count K is a number, and s is hypergeometric given K (a uniformly random
subset of n of the N examples). The bound is the largest K/N that a one-sided test at level
alpha does not reject (`P(X <= s | N, K, n) > alpha`); it is never above the deterministic
(s + N - n) / N and is tighter than a binomial bound. `alpha = delta / (looks x candidates)`:
Bonferroni over the interim looks and the step's candidates, so `delta` (`--racing-delta`,
0.05) bounds, per step, the probability that ANY candidate whose full-set accuracy reaches the
threshold is stopped. The threshold only rises as the history grows, so a stopped candidate
stays excluded in later steps with the same guarantee.

The threshold uses only fully scored history entries (every pair graded, exact on the
training set); a raced candidate is never one of them. A stopped candidate leaves as a
`Raced` outcome: its partial score, how many examples it was graded on, the bound and the
threshold; the loop records it with status `raced` and keeps it out of the history, so it never
appears in a meta-prompt (it could only enter one as if fully scored) or the final pick.
"""

from __future__ import annotations

import hashlib
import math
import random
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from opro.checks import FloatRange
from opro.errors import SettingsError
from opro.optimize.metaprompt import MetaPromptConfig, shown_cap, shown_threshold
from opro.optimize.problem import Problem, SolutionScore
from opro.tasks.grading import Grading

# `--racing-delta`: a probability, never 0 (nothing could be stopped).
RACING_DELTA = FloatRange(0.0, 0.5, low_open=True)
# The first round covers at least this many examples (a bound on fewer stops almost nothing).
MIN_FIRST_ROUND = 16
# ... and at least this share of the training set: N=200 looks at 25, 50 and 100 examples.
FIRST_ROUND_SHARE = 8


class RacingProblem(Protocol):
    """What racing needs of a problem: its training size and scores on a subset of it."""

    def training_size(self) -> int: ...

    async def score_examples(
        self, solutions: Sequence[str], indices: Sequence[int]
    ) -> list[SolutionScore]:
        """Scores on the training examples at `indices`; `detail` holds `correct`,
        `correct_reference`, `graded`, `n` and `wrong` (as training indices)."""
        ...


@dataclass(frozen=True, slots=True)
class Raced:
    """Why a candidate was stopped: it was graded on `graded` of `total` training examples,
    and its full-set accuracy is below `bound` < `threshold` with probability >= 1 - alpha."""

    graded: int
    total: int
    bound: float
    threshold: float
    alpha: float


Outcome = tuple[SolutionScore, Raced | None]


def racing_seed(seed: int, step: int) -> int:
    """The seed of a step's training order: a pure function of (run seed, step)."""
    digest = hashlib.sha256(f"opro-racing/{seed}/{step}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


def order(n: int, seed: int) -> list[int]:
    """The training indices in the order a step scores them."""
    indices = list(range(n))
    random.Random(seed).shuffle(indices)
    return indices


def first_round(n: int) -> int:
    return min(n, max(MIN_FIRST_ROUND, math.ceil(n / FIRST_ROUND_SHARE)))


def looks(n: int) -> list[int]:
    """Cumulative round sizes, doubling from `first_round(n)`; the last is n (no look there)."""
    sizes = [first_round(n)] if n > 0 else []
    while sizes and sizes[-1] < n:
        sizes.append(min(n, 2 * sizes[-1]))
    return sizes


def tail(s: int, n: int, total: int, k: int) -> float:
    """P(X <= s) for X hypergeometric: n drawn without replacement from `total` items of
    which k are successes. Exact (integer arithmetic, one rounding at the end)."""
    if not 0 <= n <= total or not 0 <= k <= total:
        raise ValueError(f"bad hypergeometric parameters n={n} k={k} N={total}")
    low = max(0, n - (total - k))
    if s < low:
        return 0.0
    top = min(s, n, k)
    ways = sum(math.comb(k, x) * math.comb(total - k, n - x) for x in range(low, top + 1))
    return ways / math.comb(total, n)


def upper_bound(s: int, n: int, total: int, alpha: float) -> float:
    """The exact one-sided (1 - alpha) upper confidence bound of the full-set accuracy K/N.

    The largest K with `tail(s, n, N, K) > alpha` (the tail falls as K grows, and is 1 at
    K = s), found by bisection; at most (s + N - n) / N, the deterministic bound.
    """
    if not 0 <= s <= n <= total or total == 0:
        raise ValueError(f"bad counts: {s} correct of {n} graded, {total} in all")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    lo, hi = s, s + (total - n)  # tail(lo) = 1 > alpha; find the last K with tail > alpha
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tail(s, n, total, mid) > alpha:
            lo = mid
        else:
            hi = mid - 1
    return lo / total


def threshold(
    complete: Sequence[float], max_shown: int | None, min_score: float | None, test_top: int
) -> float | None:
    """The score a new candidate needs to matter, from the fully scored history (higher is
    better), or None when any score could matter (nothing may be stopped).

    A candidate is shown when its score is at least `min_score` and at least the
    `max_shown`-th best (the meta-prompt keeps the later of equal scores, so a tie enters);
    it reaches the final table when at least the `test_top`-th best. It cannot matter when
    it does neither: below min(max(min_score, max_shown-th best), test_top-th best).
    """
    ranked = sorted(complete, reverse=True)
    show = -math.inf if min_score is None else min_score
    if max_shown is not None and len(ranked) >= max_shown:
        show = max(show, ranked[max_shown - 1])
    final = math.inf
    if test_top > 0:
        final = ranked[test_top - 1] if len(ranked) >= test_top else -math.inf
    needed = min(show, final)
    return needed if math.isfinite(needed) else None


def stop_rule(
    correct: int, graded: int, total: int, needed: float, alpha: float
) -> tuple[bool, float]:
    """(stop?, bound): stop when the upper bound is strictly below the threshold."""
    bound = upper_bound(correct, graded, total, alpha)
    return bound < needed, bound


@dataclass(slots=True)
class _Tally:
    """One candidate's counts over the rounds so far, merged into one `SolutionScore`."""

    parts: list[SolutionScore]

    def counts(self, grading: Grading) -> tuple[int, int] | None:
        """(correct by `grading`, graded), or None when a round did not count them."""
        key = "correct_reference" if grading == "reference" else "correct"
        found = [c for p in self.parts if isinstance(c := p.detail.get(key), int)]
        if len(found) < len(self.parts):
            return None  # never stop on counts that are not there
        return sum(found), sum(int(p.detail.get("graded", 0)) for p in self.parts)

    def merged(self) -> SolutionScore:
        """What one fan-out over the same examples would have reported."""
        parts = self.parts
        spend = parts[0].spend
        for p in parts[1:]:
            spend = spend + p.spend
        correct = sum(int(p.detail["correct"]) for p in parts)
        references = [p.detail.get("correct_reference") for p in parts]
        reference = None if None in references else sum(int(r or 0) for r in references)
        graded = sum(int(p.detail["graded"]) for p in parts)
        wrong = sorted(i for p in parts for i in p.detail.get("wrong", ()))
        detail = {
            "correct": correct,
            "correct_reference": reference,
            "graded": graded,
            "n": sum(int(p.detail["n"]) for p in parts),
            "wrong": wrong,
        }
        strict = correct / graded if graded else None
        ref = reference / graded if graded and reference is not None else None
        return SolutionScore(
            score=strict,
            spend=spend,
            cache_hits=sum(p.cache_hits for p in parts),
            errors=sum(p.errors for p in parts),
            detail=detail,
            by_grading={"strict": strict, "reference": ref},
            truncated=sum(p.truncated for p in parts),
        )


async def race(
    problem: RacingProblem,
    solutions: Sequence[str],
    *,
    needed: float,
    delta: float,
    seed: int,
    grading: Grading,
) -> list[Outcome]:
    """Score `solutions` in rounds over the step's training order, stopping those whose
    upper bound falls below `needed`; see the module docstring."""
    total = problem.training_size()
    sizes = looks(total)
    interim = max(1, len(sizes) - 1)
    alpha = delta / (interim * max(1, len(solutions)))
    shuffled = order(total, seed)
    tallies = [_Tally([]) for _ in solutions]
    stops: list[Raced | None] = [None] * len(solutions)
    alive = list(range(len(solutions)))
    start = 0
    for size in sizes:
        chunk = shuffled[start:size]
        got = await problem.score_examples([solutions[i] for i in alive], chunk)
        for i, score in zip(alive, got, strict=True):
            tallies[i].parts.append(score)
        start = size
        if size == total:
            break
        for i in alive:
            counted = tallies[i].counts(grading)
            if counted is None or counted[1] == 0:
                continue
            correct, graded = counted
            stop, bound = stop_rule(correct, graded, total, needed, alpha)
            if stop:
                stops[i] = Raced(graded, total, bound, needed, alpha)
        alive = [i for i in alive if stops[i] is None]
        if not alive:
            break
    return [(t.merged(), stop) for t, stop in zip(tallies, stops, strict=True)]


async def score_step(
    problem: Problem,
    solutions: Sequence[str],
    *,
    complete: Sequence[float],
    meta: MetaPromptConfig,
    test_top: int,
    delta: float | None,
    seed: int,
    grading: Grading,
) -> list[Outcome]:
    """The loop's hook: a step's new candidates scored on the training split, in one fan-out
    (`delta` None: racing off, or nothing can be stopped yet), else raced in rounds.

    `complete` holds the scores of the fully scored history; `meta` is resolved (no "auto").
    """
    needed = None
    if delta is not None and solutions:
        needed = threshold(complete, shown_cap(meta), shown_threshold(meta), test_top)
    if needed is None or delta is None:
        return [(s, None) for s in await problem.score(solutions, "train")]
    racer = typing.cast(RacingProblem, problem)  # `check_racing` checked it at the start
    return await race(racer, solutions, needed=needed, delta=delta, seed=seed, grading=grading)


def check_racing(problem: Problem, meta: MetaPromptConfig) -> None:
    """Refuse racing where its guarantee does not hold, before anything is paid."""
    if not problem.higher_is_better or not all(
        callable(getattr(problem, name, None)) for name in ("training_size", "score_examples")
    ):
        raise SettingsError(
            "racing needs a problem scored by accuracy on training examples (a prompt "
            "problem); run without --racing"
        )
    check_racing_meta(meta)


def check_racing_meta(meta: MetaPromptConfig) -> None:
    """Racing keeps stopped candidates out of the history: no meta-prompt rule may read
    what it does not show."""
    if meta.exemplar_selection == "accumulative_most_frequent":
        raise SettingsError(
            "racing cannot be combined with exemplar selection accumulative_most_frequent: "
            "that rule reads the misses of every scored instruction, raced ones included; "
            "choose another --exemplar-selection or run without --racing"
        )


def racing_plan_line(upper_calls: int, steps: int, candidates: int, n_train: int) -> str:
    """What racing may save, for a dry run: only a range, since full evaluation stays the
    bound (the budget still reserves every call a step could make)."""
    first = first_round(n_train)
    low = max(0, upper_calls - steps * candidates * (n_train - first))
    return (
        f"racing: scorer calls between {low:,} (every later candidate stopped at its first "
        f"look, {first} of {n_train} examples) and {upper_calls:,} (none stopped); "
        f"the plan above and the budget count the latter"
    )
