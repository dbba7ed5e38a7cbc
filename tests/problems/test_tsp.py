"""TSP on the OPRO loop: instances, tour parsing, the baselines, the exact solvers, the loop."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from opro.caches.memory import MemoryCache
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Model
from opro.engine.retry import RetryPolicy
from opro.optimize.loop import RESAMPLE_ROUNDS, OptimizeConfig, optimize
from opro.optimize.metaprompt import MetaPromptConfig, Scored
from opro.optimize.runlog import read_steps
from opro.problems.tsp import (
    TspInstance,
    TspProblem,
    TspReference,
    TspRun,
    check_tour,
    find_tour,
    format_tour,
    make_instance,
    reference,
    render_table,
    summarize,
)
from opro.problems.tsp_solvers import (
    brute_force,
    cp_sat_tour,
    distance_matrix,
    farthest_insertion,
    farthest_insertion_reference,
    held_karp,
    nearest_neighbour,
    tour_length,
)
from opro.providers.base import Provider
from opro.providers.types import Completion, Request, Usage

Script = Callable[[int, int], str]


class ScriptedOptimizer(Provider):
    name = "scripted"

    def __init__(self, script: Script) -> None:
        super().__init__("optimizer")
        self.script = script
        self.calls = 0

    async def complete(self, request: Request) -> Completion:
        self.calls += 1
        texts = tuple(self.script(self.calls, i) for i in range(request.n))
        return Completion(texts, Usage(100, 10 * len(texts)), ("stop",) * len(texts))

    @property
    def supports_n(self) -> bool:
        return True


def model_of(provider: Provider) -> Model:
    limiter = ConnectionLimiter(LimitConfig())
    return Model(provider, limiter=limiter, retry=RetryPolicy(), cache=None)


# 0 --- 1, with 2 to the left of 0 and 3 far to the right, all on one line.
LINE = ((0, 0), (1, 0), (-2, 0), (5, 0))
# A 10 x 10 square (0, 1, 2, 3) with node 4 just inside, near the bottom edge.
SQUARE = ((0, 0), (10, 0), (10, 10), (0, 10), (5, 1))


def test_tour_length_by_hand() -> None:
    dist = distance_matrix(((0, 0), (3, 0), (3, 4), (0, 4)))
    assert tour_length(dist, [0, 1, 2, 3]) == pytest.approx(14)
    assert tour_length(dist, [0, 2, 1, 3]) == pytest.approx(5 + 4 + 5 + 4)


def test_nearest_neighbour_by_hand() -> None:
    dist = distance_matrix(LINE)
    # From 0: node 1 (1), from 1: node 2 (3) before node 3 (4), then 3 (7), home (5).
    assert nearest_neighbour(dist) == [0, 1, 2, 3]
    assert tour_length(dist, [0, 1, 2, 3]) == pytest.approx(16)
    assert brute_force(dist)[0] == pytest.approx(14)
    assert nearest_neighbour(distance_matrix(SQUARE)) == [0, 4, 1, 2, 3]


def test_farthest_insertion_by_hand() -> None:
    # LINE: 3 is farthest from 0 -> [0, 3]; then 2 (2 away) goes first; then 1 costs
    # nothing between 2 and 3 (3 + 4 - 7) -> [0, 2, 1, 3], the optimum of length 14.
    dist = distance_matrix(LINE)
    assert farthest_insertion(dist) == [0, 2, 1, 3]
    assert tour_length(dist, [0, 2, 1, 3]) == pytest.approx(14)
    # SQUARE: 2 (the far corner), then 1 (tie with 3, lower index), then 3 closing the square,
    # then 4 on the bottom edge between 0 and 1.
    assert farthest_insertion(distance_matrix(SQUARE)) == [0, 4, 1, 2, 3]


# Node 2 is farthest from 0; then 1 and 4 are both 5 from the tour {0, 2}, while inserting 4
# costs 9.27 and 1 only 3.19.
KITE = ((0, 0), (6, 0), (6, -5), (4, -2), (-5, 0))


def test_farthest_insertion_as_the_papers_code_runs_it_by_hand() -> None:
    dist = distance_matrix(KITE)
    # Textbook: 2, then 1 (tied with 4 at distance 5; the lower index), then 3, then 4.
    assert farthest_insertion(dist) == [0, 1, 2, 3, 4]
    # The paper's code prices each node at its cheapest insertion and takes the dearest: 2
    # (2 x 7.81), then 4 (+9.27 -> [0, 4, 2], 24.89), then 1: after 4 gives 28.81 and after
    # 2 gives 28.08, both 28 when truncated, so the earlier place wins -> [0, 4, 1, 2]; then
    # 3 after 4 (29.86) and after 2 (29.08) truncate to 29 alike -> [0, 4, 3, 1, 2].
    paper = farthest_insertion_reference(dist)
    assert paper == [0, 4, 3, 1, 2]
    assert tour_length(dist, paper) == pytest.approx(29.858, abs=1e-3)
    # Compared untruncated, 1 goes after 2 (28.08) and 3 between 4 and 2: the textbook cycle.
    assert farthest_insertion_reference(dist, integer_lengths=False) == [0, 4, 3, 2, 1]
    assert tour_length(dist, farthest_insertion(dist)) == pytest.approx(28.825, abs=1e-3)
    # LINE: 3 is dearest (2 x 5), then 2 (+4 either side of the 0-3 edge: the earlier place),
    # then 1 for free between 2 and 3: the optimum, as with the textbook rule.
    assert farthest_insertion_reference(distance_matrix(LINE)) == [0, 2, 1, 3]


@pytest.mark.requires_extra("ortools")
@pytest.mark.parametrize("n", [5, 6, 7, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_solvers_agree_with_brute_force(n: int, seed: int) -> None:
    dist = distance_matrix(make_instance(n, seed=(seed, n)).points)
    length, tour = brute_force(dist)
    assert tour_length(dist, tour) == pytest.approx(length)
    hk_length, hk_tour = held_karp(dist)
    exact = cp_sat_tour(dist)
    assert hk_length == pytest.approx(length, abs=1e-9)
    assert tour_length(dist, hk_tour) == pytest.approx(length, abs=1e-9)
    assert exact.proven and exact.length == pytest.approx(length, abs=1e-3)
    for found in (hk_tour, exact.tour):
        assert found[0] == 0 and sorted(found) == list(range(n))
    heuristics = (nearest_neighbour(dist), farthest_insertion(dist))
    for heuristic in (*heuristics, farthest_insertion_reference(dist)):
        assert sorted(heuristic) == list(range(n)) and tour_length(dist, heuristic) >= length - 1e-9


@pytest.mark.requires_extra("ortools")
def test_cp_sat_agrees_with_held_karp_at_twelve_nodes() -> None:
    dist = distance_matrix(make_instance(12, seed=(7,)).points)
    assert cp_sat_tour(dist).length == pytest.approx(held_karp(dist)[0], abs=1e-3)


def test_instances_are_seeded_integer_points_in_range() -> None:
    a = make_instance(20, seed=(0, 20, 1))
    assert a == make_instance(20, seed=(0, 20, 1)) != make_instance(20, seed=(0, 20, 2))
    assert all(-100 <= v <= 100 and isinstance(v, int) for p in a.points for v in p)
    with pytest.raises(ValueError, match="at least 5"):
        make_instance(4)


@pytest.mark.parametrize(
    ("answer", "tour"),
    [
        ("<trace>0,3,1,2,4</trace>", "0,3,1,2,4"),
        ("Here: <TRACE> 0, 3, 1, 2, 4 </TRACE>", "0,3,1,2,4"),
        ("Old: <trace>0,1,2,3,4</trace>\nNew: <trace>0,2,1,3,4</trace>", "0,2,1,3,4"),
        ("<trace>0,4,3,2,1", "0,4,3,2,1"),  # cut off before the closing tag
        ("The trace is [0, 2, 4, 1, 3].", "0,2,4,1,3"),
        ("0 -> 2 -> 4 -> 1 -> 3", "0,2,4,1,3"),
        ("0\u21922\u21924\u21921\u21923", "0,2,4,1,3"),
        ("<trace>0,3,1,2,4,0</trace>", "0,3,1,2,4"),  # closed back to node 0
    ],
)
def test_tours_are_found_in_messy_answers(answer: str, tour: str) -> None:
    found = find_tour(answer)
    assert found is not None
    assert check_tour(found, 5) == (tour, None)


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        ("0,1,1,2,3", "visits node 1 twice"),
        ("0,1,2,3", "misses node 4"),
        ("0,1,2", "misses nodes 3,4"),
        ("1,0,2,3,4", "does not start at node 0"),
        ("0,1,2,3,7", "node 7 does not exist (nodes are 0..4)"),
        ("0,1,2,-3,4", "node -3 does not exist (nodes are 0..4)"),
        ("0,1,2,3,4,5,0", "node 5 does not exist (nodes are 0..4)"),
        ("no tour", "no nodes"),
    ],
)
def test_invalid_tours_are_rejected(candidate: str, reason: str) -> None:
    assert check_tour(candidate, 5)[1] == reason


def test_answers_without_a_tour() -> None:
    assert find_tour("I cannot do this without code.") is None
    assert find_tour("Points 3 and 4 are close.") is None


def small_problem(n: int = 7, seed: int = 3) -> TspProblem:
    instance = make_instance(n, seed=(seed,))
    return TspProblem(instance, reference(instance), start_seed=(seed, 1))


@pytest.mark.requires_extra("ortools")
def test_reference_and_starting_tours() -> None:
    problem = small_problem()
    ref = problem.ref
    dist = problem.dist
    assert ref.proven and ref.optimum_length == pytest.approx(brute_force(dist)[0], abs=1e-9)
    assert ref.held_karp_length == pytest.approx(ref.optimum_length, abs=1e-9)
    assert ref.nn_length == pytest.approx(tour_length(dist, nearest_neighbour(dist)))
    paper_fi = farthest_insertion_reference(dist)
    assert ref.farthest_insertion_ref == tuple(paper_fi)
    assert ref.fi_ref_length == pytest.approx(tour_length(dist, paper_fi))
    assert ref.gap(ref.optimum_length * 1.1) == pytest.approx(10.0)
    starts = problem.initial_solutions()
    assert len(set(starts)) == 5
    for tour in starts:
        assert check_tour(tour, 7)[1] is None and not problem.solved(tour)
    assert problem.solved(format_tour(ref.optimum))
    assert problem.solved(format_tour([0, *reversed(ref.optimum[1:])]))  # same cycle


@pytest.mark.requires_extra("ortools")
def test_meta_prompt_lists_points_and_the_best_traces_longest_first() -> None:
    problem = small_problem()
    history = [Scored(f"0,{i}", 100.0 + i, 1) for i in range(25)]
    text = problem.meta_prompt(history, MetaPromptConfig(max_shown=10), random.Random(0)).text
    x, y = problem.instance.points[0]
    assert text.startswith(f"Here are 7 points with their coordinates:\n(0): ({x}, {y}), (1): ")
    lengths = [
        int(line.removeprefix("length: ")) for line in text.splitlines() if "length: " in line
    ]
    assert lengths == list(range(109, 99, -1))  # the best ten, the shortest last
    assert "from the longest to the shortest" in text and text.endswith("</trace>.")


def other_tours(problem: TspProblem) -> list[str]:
    """Valid, non-optimal tours that are not starting tours, in a fixed order."""
    starts = set(problem.initial_solutions())
    out = []
    for rest in itertools.permutations(range(1, problem.instance.n)):
        tour = format_tour([0, *rest])
        if tour not in starts and not problem.solved(tour):
            out.append(tour)
    return out


@pytest.mark.requires_extra("ortools")
async def test_the_loop_stops_at_the_optimum(tmp_path: Path) -> None:
    problem = small_problem()
    pool = other_tours(problem)
    optimum_reversed = format_tour([0, *reversed(problem.ref.optimum[1:])])

    def script(call: int, sample: int) -> str:
        if sample == 7:
            return "<trace>0,1,1,2,3,4,5</trace>"  # node 1 twice
        if sample == 6:
            return "I cannot draw it."
        if call == 2 and sample == 0:
            return f"Shorter: <trace>{optimum_reversed}</trace>"
        return f"<trace>{pool[6 * call + sample]}</trace>"

    provider = ScriptedOptimizer(script)
    result = await optimize(
        problem, model_of(provider), OptimizeConfig(steps=20), run_dir=tmp_path / "run"
    )
    assert provider.calls == 2 and result.steps_completed == 2
    assert result.best is not None and result.best.step == 2
    assert result.best.score == pytest.approx(problem.ref.optimum_length)
    assert len(result.history) == 5 + 6 * 2
    records, _ = read_steps(tmp_path / "run" / "steps.jsonl")
    rejected = [
        c["reason"] for r in records[1:] for c in r["candidates"] if c["status"] == "rejected"
    ]
    assert sorted(rejected) == ["no candidate"] * 2 + ["visits node 1 twice"] * 2
    # The final table scores the heuristics' tours beside the best ones.
    lengths = [row.train for row in result.final]
    assert any(math.isclose(v or 0.0, problem.ref.nn_length) for v in lengths)
    assert any(math.isclose(v or 0.0, problem.ref.fi_length) for v in lengths)
    assert any(math.isclose(v or 0.0, problem.ref.fi_ref_length or 0.0) for v in lengths)


def reference_of(optimum: float, nn: float, fi: float, fi_ref: float) -> TspReference:
    tour = (0, 1, 2, 3, 4)
    return TspReference(tour, optimum, True, tour, tour, nn, fi, None, tour, fi_ref)


def test_table_three_layout() -> None:
    runs = [
        TspRun(10, 0, 100.0, 4, reference_of(100.0, 110.0, 102.0, 104.0), proposed=32, invalid=3),
        TspRun(
            10, 1, 220.0, None, reference_of(200.0, 240.0, 200.0, 210.0), proposed=40, invalid=1
        ),
        TspRun(50, 0, None, None, reference_of(300.0, 330.0, 303.0, 309.0)),
    ]
    rows = summarize(runs)
    assert [r["n"] for r in rows] == [10, 50]
    ten = rows[0]
    assert ten["gaps"] == {
        "nn": [10.0, 20.0],
        "fi": [2.0, 0.0],
        "fi_ref": [4.0, 5.0],
        "opro": [0.0, 10.0],
    }
    assert ten["gaps_mean_std"]["nn"] == (15.0, 5.0)
    assert ten["solved"] == 1 and ten["steps"] == [4.0] and ten["runs"] == 2
    assert (ten["proposed"], ten["invalid"]) == (72, 4)
    text = render_table(rows, "openai/x")
    assert "15.0 +- 5.0" in text and "1.0 +- 1.0" in text and "5.0 +- 5.0" in text
    assert "4.0 +- 0.0 (1/2)" in text and "4/72" in text
    assert "4.5 +- 0.5" in text  # FI as the paper's code runs it
    head = text.splitlines()[1]
    assert head.index("FI-paper") < head.index("FI-textbook") < head.index("OPRO")
    fifty = text.splitlines()[4]
    assert fifty.split()[:10] == ["50", "10.0", "+-", "0.0", "3.0", "+-", "0.0", "1.0", "+-", "0.0"]
    assert "- (no runs)" in fifty


def test_instance_digest_changes_with_the_points() -> None:
    a = TspInstance(((0, 0), (1, 1)), (0,))
    b = TspInstance(((0, 0), (1, 2)), (0,))
    assert a.digest() != b.digest()


def invalid_then_valid(problem: TspProblem, bad: set[tuple[int, int]]) -> ScriptedOptimizer:
    """Answers (call, sample) in `bad` repeat node 1; the others are fresh valid tours."""
    pool = iter(other_tours(problem))

    def script(call: int, sample: int) -> str:
        if (call, sample) in bad:
            return "<trace>0,1,1,2,3,4,5</trace>"
        return f"<trace>{next(pool)}</trace>"

    return ScriptedOptimizer(script)


@pytest.mark.parametrize("resample", [False, True])
async def test_invalid_tours_are_counted_and_optionally_asked_for_again(
    resample: bool, tmp_path: Path
) -> None:
    problem = small_problem()
    provider = invalid_then_valid(problem, {(1, 5), (1, 6), (1, 7)})  # 3 of step 1's 8
    cfg = OptimizeConfig(steps=2, resample_invalid=resample)
    await optimize(problem, model_of(provider), cfg, run_dir=tmp_path / "run")
    records, _ = read_steps(tmp_path / "run" / "steps.jsonl")
    one, two = records[1], records[2]
    assert one["invalid"] == 3 and two["invalid"] == 0
    valid = [c for c in one["candidates"] if c["status"] != "rejected"]
    if resample:  # one more ask, for exactly the three that were invalid
        assert (one["asks"], len(one["answers"]), len(valid)) == (2, 11, 8)
        assert provider.calls == 3 and one["optimizer"]["calls"] == 2
        assert sorted(c["answer"] for c in valid) == [0, 1, 2, 3, 4, 8, 9, 10]
    else:
        assert (one["asks"], len(one["answers"]), len(valid)) == (1, 8, 5)
        assert provider.calls == 2
    assert two["asks"] == 1


async def test_asking_again_is_bounded_and_replays_from_the_cache(tmp_path: Path) -> None:
    problem = small_problem()
    always_bad = {(call, sample) for call in range(1, 20) for sample in range(8)}
    provider = invalid_then_valid(problem, always_bad)
    cache = MemoryCache()
    model = Model(
        provider, limiter=ConnectionLimiter(LimitConfig()), retry=RetryPolicy(), cache=cache
    )
    cfg = OptimizeConfig(steps=1, resample_invalid=True)
    await optimize(problem, model, cfg, run_dir=tmp_path / "a")
    records, _ = read_steps(tmp_path / "a" / "steps.jsonl")
    assert records[1]["asks"] == 1 + RESAMPLE_ROUNDS  # not forever
    assert records[1]["invalid"] == len(records[1]["answers"]) == 8 * (1 + RESAMPLE_ROUNDS)
    assert provider.calls == 1 + RESAMPLE_ROUNDS
    # Every ask has its own cache key, so the same run again is answered from the cache.
    await optimize(problem, model, cfg, run_dir=tmp_path / "b")
    assert provider.calls == 1 + RESAMPLE_ROUNDS
    again, _ = read_steps(tmp_path / "b" / "steps.jsonl")
    assert again[1]["answers"] == records[1]["answers"]
