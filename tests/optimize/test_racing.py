"""Racing's statistics and rules: the exact bound, the threshold, the rounds, the records."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import Sequence

import pytest

from opro.engine.spend import Spend
from opro.errors import SettingsError
from opro.optimize.loop import OptimizeConfig
from opro.optimize.metaprompt import MetaPromptConfig
from opro.optimize.problem import SolutionScore
from opro.optimize.racing import (
    looks,
    order,
    race,
    racing_plan_line,
    racing_seed,
    stop_rule,
    tail,
    threshold,
    upper_bound,
)


def brute_tail(s: int, n: int, total: int, k: int) -> float:
    """P(X <= s) by enumerating every n-subset of a population with k successes."""
    population = [1] * k + [0] * (total - k)
    subsets = list(itertools.combinations(range(total), n))
    hits = sum(sum(population[i] for i in subset) <= s for subset in subsets)
    return hits / len(subsets)


@pytest.mark.parametrize("total", [1, 5, 8])
def test_the_tail_is_the_exact_hypergeometric_tail(total: int) -> None:
    for n in range(total + 1):
        for k in range(total + 1):
            for s in range(-1, n + 1):
                assert tail(s, n, total, k) == pytest.approx(brute_tail(s, n, total, k), abs=1e-12)


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.3])
def test_the_bound_is_the_largest_count_the_test_does_not_reject(alpha: float) -> None:
    total = 8
    for n in range(1, total + 1):
        for s in range(n + 1):
            exact = max(k for k in range(total + 1) if brute_tail(s, n, total, k) > alpha)
            bound = upper_bound(s, n, total, alpha)
            assert bound == exact / total
            assert s / total <= bound <= (s + total - n) / total  # the deterministic bound
    assert upper_bound(7, 8, 8, alpha) == 7 / 8  # everything scored: the bound is the score


def binomial_upper(s: int, n: int, alpha: float) -> float:
    """The Clopper-Pearson upper bound: the p with P(Bin(n, p) <= s) = alpha (bisection)."""
    if s == n:
        return 1.0
    lo, hi = s / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        cdf = sum(math.comb(n, x) * mid**x * (1 - mid) ** (n - x) for x in range(s + 1))
        lo, hi = (mid, hi) if cdf > alpha else (lo, mid)
    return hi


def test_the_finite_population_bound_is_tighter_than_the_binomial_one() -> None:
    total, tighter = 200, 0
    for n in (25, 50, 100, 150):
        for s in range(0, n + 1, 5):
            bound = upper_bound(s, n, total, 0.002)
            binomial = binomial_upper(s, n, 0.002)
            assert bound <= binomial + 1 / total
            tighter += bound < binomial - 1 / total
    assert tighter > 20  # most cases, by more than one example


def test_looks_double_up_to_the_training_size() -> None:
    assert looks(200) == [25, 50, 100, 200]
    assert looks(30) == [16, 30]
    assert looks(10) == [10]
    assert looks(1000) == [125, 250, 500, 1000]


def test_a_steps_order_is_a_seeded_permutation() -> None:
    a = order(50, racing_seed(0, 3))
    assert sorted(a) == list(range(50))
    assert a == order(50, racing_seed(0, 3))
    assert a != order(50, racing_seed(0, 4)) and a != order(50, racing_seed(1, 3))


def test_the_threshold_is_what_a_candidate_needs_to_be_shown_or_kept() -> None:
    history = [0.9, 0.8, 0.7, 0.6, 0.5]
    # Fewer solutions than shown and kept: any score could matter.
    assert threshold(history, 20, None, 3) is None
    # Shown are the best 3; kept the best 2: it must reach the 3rd best (0.7).
    assert threshold(history, 3, None, 2) == 0.7
    # Kept are the best 4 (more than shown): the 4th best.
    assert threshold(history, 2, None, 4) == 0.6
    # A listing threshold above the k-th best raises it, up to what the final table needs.
    assert threshold(history, 20, 0.75, 0) == 0.75
    assert threshold(history, 3, 0.85, 2) == 0.8
    # No final table: only the meta-prompt counts; no cap and no threshold: all are shown.
    assert threshold(history, 4, None, 0) == 0.6
    assert threshold(history, None, None, 0) is None
    # Ties: the k-th best score itself still enters (the meta-prompt keeps the later one).
    assert threshold([0.5] * 5, 3, None, 1) == 0.5


def test_the_stop_rule_is_strict() -> None:
    bound = upper_bound(10, 25, 200, 0.01)
    assert stop_rule(10, 25, 200, bound + 1e-9, 0.01) == (True, bound)
    assert stop_rule(10, 25, 200, bound, 0.01) == (False, bound)


def test_a_candidate_that_could_matter_is_stopped_at_most_at_the_stated_rate() -> None:
    """Seeded simulation at the worst case: true full-set accuracy exactly at the threshold."""
    total, candidates, delta = 200, 8, 0.05
    sizes = looks(total)
    alpha = delta / ((len(sizes) - 1) * candidates)
    rng = random.Random(7)
    trials = stopped = 0
    for k in (100, 150, 180):  # true accuracy k / N, and the threshold at it
        needed = k / total
        for _ in range(3000):
            items = [1] * k + [0] * (total - k)
            rng.shuffle(items)
            trials += 1
            stopped += any(
                stop_rule(sum(items[:n]), n, total, needed, alpha)[0] for n in sizes[:-1]
            )
    # Per candidate the rate is at most delta / candidates (Bonferroni over the step's ones).
    rate = stopped / trials
    sigma = math.sqrt(delta / candidates / trials)
    assert rate <= delta / candidates + 3 * sigma


def test_a_candidate_far_below_the_threshold_is_stopped_early() -> None:
    assert stop_rule(5, 25, 200, 0.8, 0.05 / 24)[0]


class Subsets:
    """A racing problem with fixed answers per solution (a unit-test stand-in)."""

    def __init__(self, right: dict[str, list[bool]]) -> None:
        self.right = right
        self.calls: list[tuple[list[str], list[int]]] = []

    def training_size(self) -> int:
        return len(next(iter(self.right.values())))

    async def score_examples(
        self, solutions: Sequence[str], indices: Sequence[int]
    ) -> list[SolutionScore]:
        self.calls.append((list(solutions), list(indices)))
        out = []
        for s in solutions:
            wrong = sorted(i for i in indices if not self.right[s][i])
            correct = len(indices) - len(wrong)
            detail = {
                "correct": correct,
                "correct_reference": correct,
                "graded": len(indices),
                "n": len(indices),
                "wrong": wrong,
            }
            score = correct / len(indices)
            by_grading = {"strict": score, "reference": score}
            spend = Spend(calls=len(indices))
            out.append(SolutionScore(score, spend, detail=detail, by_grading=by_grading))
        return out


def test_race_scores_survivors_in_one_fanout_per_round_and_stops_the_hopeless() -> None:
    rng = random.Random(1)
    right = {
        "good": [rng.random() < 0.9 for _ in range(200)],
        "bad": [rng.random() < 0.2 for _ in range(200)],
    }
    problem = Subsets(right)
    seed = racing_seed(0, 1)
    outcomes = asyncio.run(
        race(problem, ["good", "bad"], needed=0.7, delta=0.05, seed=seed, grading="strict")
    )
    (good, good_stop), (bad, bad_stop) = outcomes
    assert good_stop is None and bad_stop is not None
    assert bad_stop.graded == 25 and bad_stop.total == 200 and bad_stop.bound < 0.7
    assert bad_stop.alpha == pytest.approx(0.05 / (3 * 2))
    # One fan-out per round; the stopped candidate is not in the later ones.
    assert [c[0] for c in problem.calls] == [["good", "bad"], ["good"], ["good"], ["good"]]
    assert [len(c[1]) for c in problem.calls] == [25, 25, 50, 100]
    assert sorted(i for c in problem.calls for i in c[1]) == list(range(200))
    # The survivor's merged score is what one full fan-out gives.
    assert good.score == sum(right["good"]) / 200
    assert good.detail["wrong"] == [i for i in range(200) if not right["good"][i]]
    assert good.calls == 200 and bad.calls == 25
    assert bad.score == bad.detail["correct"] / 25


def test_racing_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="racing_delta"):
        OptimizeConfig(racing=True, racing_delta=0.0)
    with pytest.raises(SettingsError, match="racing_delta"):
        OptimizeConfig(racing_delta=math.nan)
    with pytest.raises(SettingsError, match="accumulative_most_frequent"):
        OptimizeConfig(
            racing=True, meta=MetaPromptConfig(exemplar_selection="accumulative_most_frequent")
        )


def test_the_plan_line_gives_a_range() -> None:
    line = racing_plan_line(20_000, 10, 8, 200)  # 10 x 8 candidates x 175 fewer pairs
    assert "between 6,000" in line and "and 20,000" in line


def test_a_raced_record_is_checked_like_every_other() -> None:
    from opro.optimize.racing import Raced
    from opro.optimize.records import raced_candidate, step_record_problem

    score = SolutionScore(0.2, Spend(calls=25), detail={"correct": 5, "graded": 25})
    entry = raced_candidate("Be.", "Be.", 0.2, score, Raced(25, 200, 0.41, 0.6, 0.002), 3)
    record = {"step": 4, "candidates": [entry], "totals": {}}
    assert step_record_problem(record) is None
    assert entry["status"] == "raced" and entry["graded"] == 25 and entry["calls"] == 25
    broken = {k: v for k, v in entry.items() if k != "bound"}
    assert step_record_problem({**record, "candidates": [broken]}) == (
        "candidates[0].bound is missing"
    )


def test_no_stop_on_counts_a_round_did_not_report() -> None:
    """By the reference rules with no reference counts (a grader without them): no stop."""

    class NoReference(Subsets):
        async def score_examples(
            self, solutions: Sequence[str], indices: Sequence[int]
        ) -> list[SolutionScore]:
            got = await super().score_examples(solutions, indices)
            return [
                SolutionScore(s.score, s.spend, detail={**s.detail, "correct_reference": None})
                for s in got
            ]

    problem = NoReference({"bad": [False] * 200})
    seed = racing_seed(0, 1)
    [(score, stop)] = asyncio.run(
        race(problem, ["bad"], needed=0.7, delta=0.05, seed=seed, grading="reference")
    )
    assert stop is None and score.calls == 200
    [(_, stop)] = asyncio.run(
        race(problem, ["bad"], needed=0.7, delta=0.05, seed=seed, grading="strict")
    )
    assert stop is not None


def test_racing_is_refused_with_an_evoprompt_strategy() -> None:
    """GA keeps the best N by full score and DE compares a child with its parent: a raced
    child has no full score to compare, so the combination is refused before anything runs."""
    from opro.errors import SettingsError
    from opro.optimize.loop import OptimizeConfig

    for strategy in ("evoprompt-ga", "evoprompt-de"):
        with pytest.raises(SettingsError, match="racing works with the opro strategy only"):
            OptimizeConfig(racing=True, strategy=strategy)
    assert OptimizeConfig(racing=True, strategy="opro").racing
