"""Linear regression on the OPRO loop: data, the exact integer optimum, parsing, the loop's stop.

The optimizer is a test-only `Provider` whose answers are scripted per (call, sample), so the
number of steps, unique pairs and rejected answers of a run are known in advance.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Model
from opro.engine.retry import RetryPolicy
from opro.optimize.loop import OptimizationResult, OptimizeConfig, optimize
from opro.optimize.metaprompt import MetaPromptConfig, Scored
from opro.optimize.runlog import read_steps
from opro.problems.linreg import (
    PAPER_SETTINGS,
    LinearRegressionProblem,
    LinregData,
    LinregRun,
    check_pair,
    find_pair,
    format_pair,
    integer_optimum,
    least_squares,
    loss,
    make_data,
    render_table,
    summarize,
)
from opro.providers.base import Provider
from opro.providers.types import Completion, Request, Usage

Script = Callable[[int, int], str]  # (call number from 1, sample index) -> answer


class ScriptedOptimizer(Provider):
    name = "scripted"

    def __init__(self, script: Script) -> None:
        super().__init__("optimizer")
        self.script = script
        self.calls = 0
        self.requests: list[Request] = []

    async def complete(self, request: Request) -> Completion:
        self.calls += 1
        self.requests.append(request)
        texts = tuple(self.script(self.calls, i) for i in range(request.n))
        return Completion(texts, Usage(100, 10 * len(texts)), ("stop",) * len(texts))

    @property
    def supports_n(self) -> bool:
        return True


def model_of(provider: Provider) -> Model:
    return Model(
        provider,
        limiter=ConnectionLimiter(LimitConfig()),
        retry=RetryPolicy(),
        cache=None,
    )


def brute_force_optimum(data: LinregData, radius: int = 12) -> tuple[int, int]:
    w_star, b_star = least_squares(data)
    grid = [
        (loss(data, w, b), w, b)
        for w in range(round(w_star) - radius, round(w_star) + radius + 1)
        for b in range(round(b_star) - 40 * radius, round(b_star) + 40 * radius + 1)
    ]
    best = min(grid)
    return best[1], best[2]


def test_data_are_seeded_and_follow_the_line() -> None:
    a, b = make_data(15, 14, seed=(0, 1, 0)), make_data(15, 14, seed=(0, 1, 0))
    assert a == b
    assert a.x == tuple(float(v) for v in range(1, 51))
    noise = np.asarray(a.y) - (15 * np.asarray(a.x) + 14)
    assert 0.5 < float(np.std(noise)) < 1.5  # standard normal, 50 draws
    assert make_data(15, 14, seed=(0, 2, 0)).y != a.y
    # The noise depends on the seed only: another line sees the very same noise.
    other = make_data(3, 5, seed=(0, 1, 0))
    np.testing.assert_allclose(np.asarray(other.y) - (3 * np.asarray(other.x) + 5), noise)


def test_least_squares_matches_numpy() -> None:
    data = make_data(17, 17, seed=(3,))
    w, b = least_squares(data)
    w_np, b_np = np.polyfit(data.x, data.y, 1)
    assert w == pytest.approx(w_np, abs=1e-9) and b == pytest.approx(b_np, abs=1e-7)


@pytest.mark.parametrize("setting", PAPER_SETTINGS)
@pytest.mark.parametrize("run", [0, 1, 2])
def test_integer_optimum_is_the_best_integer_pair(setting: tuple[int, int], run: int) -> None:
    data = make_data(*setting, seed=(0, run, 0))
    assert integer_optimum(data) == brute_force_optimum(data)


def test_the_integer_optimum_is_not_the_rounded_real_optimum() -> None:
    """Why `integer_optimum` searches: rounding both coordinates can miss by a lot."""
    x = tuple(float(v) for v in range(1, 51))
    data = LinregData(15, 10, x, tuple(15.3 * v + 10 for v in x), (0,))
    w_star, b_star = least_squares(data)
    rounded = (round(w_star), round(b_star))
    assert rounded == (15, 10)
    best = integer_optimum(data)
    assert best == brute_force_optimum(data) != rounded
    assert loss(data, *best) < loss(data, *rounded) / 4


def test_loss_by_hand() -> None:
    data = LinregData(2, 1, (1.0, 2.0, 3.0), (3.0, 5.0, 8.0), (0,))
    assert loss(data, 2, 1) == pytest.approx(1.0)  # residuals 0, 0, 1
    assert loss(data, 3, 0) == pytest.approx(0 + 1 + 1)


@pytest.mark.parametrize(
    ("answer", "canonical"),
    [
        ("[w, b] = [17, 12]", "w=17, b=12"),
        ("w=17, b=12", "w=17, b=12"),
        ("(17, 12)", "w=17, b=12"),
        ("[-3, -12]", "w=-3, b=-12"),
        ("so w = \u22124 and b = 7", "w=-4, b=7"),  # a typeset minus sign
        ("I pick W: 17; B: 12.", "w=17, b=12"),
        ("The best so far is [16, 11]; trying w=17, b=13 next.", "w=17, b=13"),
        ("Rounding: [17.6, 12.4]", "w=18, b=12"),
        ("[+5, 0]", "w=5, b=0"),
        ("**New pair:**\n\n[ 20 ,  -1 ]\n", "w=20, b=-1"),
        ("w=17, b=12", "w=17, b=12"),
    ],
)
def test_pairs_are_found_in_messy_answers(answer: str, canonical: str) -> None:
    found = find_pair(answer)
    assert found is not None
    assert check_pair(found) == (canonical, None)


@pytest.mark.parametrize(
    "answer", ["no idea", "[w, b]", "w is large, b is small", "[17]", "17, 12", "import os"]
)
def test_answers_without_a_pair(answer: str) -> None:
    assert find_pair(answer) is None
    assert check_pair(answer)[1] == "not a (w, b) pair"


def test_huge_pairs_are_rejected() -> None:
    assert check_pair("[5000000, 1]")[1] is not None
    assert check_pair("[" + "9" * 400 + ", 1]")[1] is not None  # float("99..9") is inf


def test_problem_starts_and_meta_prompt() -> None:
    problem = LinearRegressionProblem(make_data(15, 14, seed=(0, 0, 0)), start_seed=(0, 0, 1))
    assert len(set(problem.starts)) == 5
    assert all(10 <= w <= 20 and 10 <= b <= 20 for w, b in problem.starts)
    assert problem.optimum not in problem.starts
    assert problem.solved(format_pair(*problem.optimum))
    assert not problem.solved(problem.initial_solutions()[0])
    history = [Scored(format_pair(w, 0), float(1000 - w), 1) for w in range(30)]
    text = problem.meta_prompt(history, MetaPromptConfig(max_shown=20), random.Random(0)).text
    shown = [line for line in text.splitlines() if line.startswith("value: ")]
    values = [int(line.removeprefix("value: ")) for line in shown]
    assert len(values) == 20 and values == sorted(values, reverse=True)  # best last
    assert values[-1] == 1000 - 29
    assert "from the highest value to the lowest" in text and text.endswith(
        "written as [w, b], for example [3, -7]."
    )


async def test_score_is_the_squared_error() -> None:
    problem = LinearRegressionProblem(make_data(3, 5, seed=(1,)))
    [score] = await problem.score(["w=3, b=5"], "train")
    assert score.score == pytest.approx(loss(problem.data, 3, 5))


def far_then_optimum(optimum: tuple[int, int], k: int) -> Script:
    """Per call: six new far-away pairs, one out-of-range pair, one answer without a pair;
    at call `k` the first answer is the optimum instead."""

    def script(call: int, sample: int) -> str:
        if sample == 7:
            return "I would rather not say."
        if sample == 6:
            return "[5000000, 1]"
        if call == k and sample == 0:
            return (
                f"Best so far was [15, 15]. After some thought: w = {optimum[0]}, b = {optimum[1]}"
            )
        return f"Next: [{100 + 10 * call + sample}, -{sample}]"

    return script


async def run_to(
    k: int, steps: int, run_dir: Path | None = None, *, resume: bool = False
) -> tuple[OptimizationResult, LinearRegressionProblem, ScriptedOptimizer]:
    problem = LinearRegressionProblem(make_data(16, 10, seed=(0, 0, 0)), start_seed=(0, 0, 1))
    provider = ScriptedOptimizer(far_then_optimum(problem.optimum, k))
    result = await optimize(
        problem, model_of(provider), OptimizeConfig(steps=steps), run_dir=run_dir, resume=resume
    )
    return result, problem, provider


async def test_the_loop_stops_when_the_optimum_is_proposed(tmp_path: Path) -> None:
    result, problem, provider = await run_to(3, 50, tmp_path / "run")
    assert provider.calls == 3 and result.steps_completed == 3
    assert result.best is not None and result.best.solution == format_pair(*problem.optimum)
    assert result.best.step == 3
    assert len(result.history) == 5 + 6 * 3  # the starts, then six new pairs a step
    records, _ = read_steps(tmp_path / "run" / "steps.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    statuses = [c["status"] for r in records[1:] for c in r["candidates"]]
    assert statuses.count("rejected") == 2 * 3 and statuses.count("new") == 6 * 3
    reasons = {c.get("reason") for r in records[1:] for c in r["candidates"]}
    assert {"no candidate", "w and b must be within +-1000000"} <= reasons
    # One request a step, for eight answers at temperature 1; the far pairs shown from step 2.
    assert [(r.n, r.temperature) for r in provider.requests] == [(8, 1.0)] * 3
    prompts = [r.as_text() for r in provider.requests]
    assert "w=110, b=0" not in prompts[0] and "w=110, b=0" in prompts[1]
    # Resuming a solved run asks for nothing more.
    again, _, second = await run_to(3, 50, tmp_path / "run", resume=True)
    assert second.calls == 0 and again.best == result.best


async def test_the_step_cap_ends_an_unsolved_run() -> None:
    result, problem, provider = await run_to(10, 4)
    assert provider.calls == 4 and result.steps_completed == 4
    assert result.best is not None and not problem.solved(result.best.solution)


def test_table_two_layout() -> None:
    runs = [
        LinregRun(15, 14, 0, 3, 10),
        LinregRun(15, 14, 1, 5, 14),
        LinregRun(15, 14, 2, None, 40, invalid=2),
        LinregRun(3, 5, 0, 8, 30),
    ]
    rows = summarize(runs)
    assert [(r["w_true"], r["b_true"], r["solved"], r["runs"]) for r in rows] == [
        (15, 14, 2, 3),
        (3, 5, 1, 1),
    ]
    assert rows[0]["steps_mean_std"] == (4.0, 1.0)
    assert rows[0]["unique_pairs_mean_std"] == (12.0, 2.0)
    assert rows[0]["invalid"] == 2
    text = render_table(rows, "openai/x")
    assert "4.0 +- 1.0" in text and "12.0 +- 2.0" in text and "2/3" in text
    assert "8.0 +- 0.0" in text and "30.0 +- 0.0" in text and "1/1" in text
    assert math.isclose(rows[1]["steps_mean_std"][0], 8.0)
