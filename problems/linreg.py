"""Linear regression as an OPRO `Problem`: the paper's first math demo (section 3.1, Table 2).

The data are 50 points x = 1..50 with y = w_true * x + b_true + standard Gaussian noise, drawn
from a seeded numpy generator; a solution is an integer pair (w, b) spelled "w=17, b=12" and
its score is the sum of squared errors, so lower is better. The optimizer reads the best
pairs so far with their losses (worst first, so the best sit next to the request) and answers
in free text; `find_pair` pulls the last pair out of it with regexes (nothing is evaluated as
code) and `check` rounds it to integers, as the paper's code rounds proposals.

A run is solved when the integer pair of least loss is proposed. That pair is computed exactly
(`integer_optimum`), not by rounding the real least-squares solution: with b's coefficient
tied to w's, rounding both coordinates can land on a pair that another integer pair beats, and
a run must not "find the optimum" while a better pair exists. `solved` is the hook through
which the generic loop stops early; `summarize` turns finished runs into the paper's Table 2.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from opro.errors import SettingsError
from opro.optimize.metaprompt import MetaPrompt, MetaPromptConfig, Scored, build_meta_prompt
from opro.optimize.problem import SolutionScore, SplitName

N_POINTS = 50
N_STARTS = 5
START_RANGE = (10, 20)  # starting w and b are integers in this closed range
MAX_ABS = 1_000_000  # larger proposals are rejected rather than scored
PAPER_SETTINGS: tuple[tuple[int, int], ...] = (
    (15, 14), (17, 17), (16, 10), (3, 5), (25, 23), (2, 30), (36, -1),
)  # fmt: skip

_NUM = r"[-+]?\d+(?:\.\d+)?"
_BRACKETED = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*\]")
_PARENTHESIZED = re.compile(rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)")
_LABELLED = re.compile(
    rf"\bw\s*(?:=|:|is)\s*({_NUM})\s*(?:,|;|and|&)?\s*\bb\s*(?:=|:|is)\s*({_NUM})", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class LinregData:
    """One regression instance: the true line, the points and the seed that drew the noise."""

    w_true: int
    b_true: int
    x: tuple[float, ...]
    y: tuple[float, ...]
    seed: tuple[int, ...]

    def digest(self) -> str:
        """A fingerprint of the points, so a resumed run is known to see the same data."""
        text = ",".join(f"{v:.12g}" for v in (*self.x, *self.y))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_data(
    w_true: int, b_true: int, *, seed: Sequence[int] = (0,), n: int = N_POINTS
) -> LinregData:
    """x = 1..n and y = w_true * x + b_true + N(0, 1) noise from `np.random.default_rng(seed)`.

    The noise depends on the seed only, not on the line, so every setting of one run index sees
    the same noise (the paper seeds by repetition the same way).
    """
    if n < 2:
        raise SettingsError(f"linear regression needs at least 2 points, got {n}")
    noise = np.random.default_rng(list(seed)).standard_normal(n)
    x = np.arange(1, n + 1, dtype=float)
    y = w_true * x + b_true + noise
    return LinregData(w_true, b_true, tuple(map(float, x)), tuple(map(float, y)), tuple(seed))


def loss(data: LinregData, w: float, b: float) -> float:
    """Sum of squared errors of the line w * x + b."""
    x, y = np.asarray(data.x), np.asarray(data.y)
    return float(np.sum((y - (w * x + b)) ** 2))


def least_squares(data: LinregData) -> tuple[float, float]:
    """The real-valued (w, b) of least loss, by the closed form of simple regression."""
    x, y = np.asarray(data.x), np.asarray(data.y)
    x_mean, y_mean = float(x.mean()), float(y.mean())
    w = float(np.sum((x - x_mean) * (y - y_mean)) / np.sum((x - x_mean) ** 2))
    return w, y_mean - w * x_mean


def integer_optimum(data: LinregData) -> tuple[int, int]:
    """The integer pair of least loss, found exactly.

    The loss is a convex quadratic, so for a fixed w the best integer b is one of the two
    integers around the real minimiser mean(y - w x); and integer w far from the real optimum
    cost more than any rounding can save, so a window of a few w around it is enough (checked
    against brute force in the tests).
    """
    w_star, _ = least_squares(data)
    x, y = np.asarray(data.x), np.asarray(data.y)
    best: tuple[float, int, int] | None = None
    for w in range(math.floor(w_star) - 3, math.ceil(w_star) + 4):
        b_star = float(np.mean(y - w * x))
        for b in (math.floor(b_star), math.ceil(b_star)):
            value = loss(data, w, b)
            if best is None or value < best[0]:
                best = (value, w, b)
    assert best is not None
    return best[1], best[2]


def format_pair(w: int, b: int) -> str:
    """The canonical spelling of a solution: the run log's key and what the meta-prompt shows."""
    return f"w={w}, b={b}"


def _last_pair(answer: str) -> re.Match[str] | None:
    text = answer.replace("\u2212", "-")  # a typeset minus sign
    found = [
        m for pattern in (_BRACKETED, _PARENTHESIZED, _LABELLED) for m in pattern.finditer(text)
    ]
    return max(found, key=lambda m: m.end()) if found else None


def find_pair(answer: str) -> str | None:
    """The text of the last (w, b) pair in an optimizer answer, or None.

    Accepted spellings: "[17, 12]", "(17, 12)" and "w=17, b=12" (also "w: 17 and b: 12").
    The meta-prompt asks for the pair at the end, and models often quote earlier pairs
    before giving theirs, so the last pair in the answer wins.
    """
    match = _last_pair(answer)
    return match.group(0) if match is not None else None


def parse_pair(text: str) -> tuple[float, float] | None:
    """The numbers of the last pair in `text`, or None when it holds no pair."""
    match = _last_pair(text)
    return (float(match.group(1)), float(match.group(2))) if match is not None else None


def check_pair(candidate: str) -> tuple[str, str | None]:
    """(canonical "w=.., b=..", rejection reason or None), rounding to the nearest integers.

    Rounding follows numpy (halves to even), as the paper's code rounds proposals.
    """
    pair = parse_pair(candidate)
    if pair is None:
        return candidate.strip(), "not a (w, b) pair"
    w, b = pair
    if not (math.isfinite(w) and math.isfinite(b)) or max(abs(w), abs(b)) > MAX_ABS:
        return candidate.strip(), f"w and b must be within +-{MAX_ABS}"
    return format_pair(round(w), round(b)), None


def starting_pairs(
    seed: Sequence[int], avoid: tuple[int, int], k: int = N_STARTS
) -> list[tuple[int, int]]:
    """`k` distinct integer pairs drawn from START_RANGE^2, never the optimum itself.

    A start that already is the optimum would end the run before the optimizer did anything.
    """
    rng = np.random.default_rng(list(seed))
    low, high = START_RANGE
    pairs: list[tuple[int, int]] = []
    while len(pairs) < k:
        w, b = (int(v) for v in rng.integers(low, high + 1, size=2))
        if (w, b) != avoid and (w, b) not in pairs:
            pairs.append((w, b))
    return pairs


def _order_words(cfg: MetaPromptConfig) -> str:
    if cfg.order == "random":
        return "in no particular order"
    if cfg.order == "ascending":  # worst to best: the highest value first
        return "from the highest value to the lowest"
    return "from the lowest value to the highest"


@dataclass(frozen=True, slots=True)
class LinregPart:
    """The meta-prompt wording for minimizing f(w, b); the data themselves are not shown."""

    def intro(self, cfg: MetaPromptConfig) -> str:
        return (
            "You are helping me minimize a function f(w, b) of two integers w and b. Below are "
            f"the pairs tried so far with the value of f at each, listed {_order_words(cfg)}. "
            "A lower value is better."
        )

    def entry(self, item: Scored, cfg: MetaPromptConfig) -> str:
        return f"pair: {item.solution}\nvalue: {round(item.score)}"

    def examples(self, rng: random.Random, cfg: MetaPromptConfig) -> tuple[str, tuple[str, ...]]:
        return "", ()

    def outro(self, cfg: MetaPromptConfig) -> str:
        return (
            "Propose one new pair of integers (w, b) that is different from every pair above "
            "and gives a lower value than all of them. Do not write code. Finish your answer "
            "with the pair written as [w, b], for example [3, -7]."
        )


class LinearRegressionProblem:
    """Find the integer (w, b) of least squared error on one `LinregData` instance."""

    higher_is_better = False
    splits: frozenset[SplitName] = frozenset({"train"})

    def __init__(self, data: LinregData, *, start_seed: Sequence[int] = (0, 1)) -> None:
        self.data = data
        self.optimum = integer_optimum(data)
        self.starts = starting_pairs(start_seed, self.optimum)
        self.start_seed = tuple(start_seed)
        self.part = LinregPart()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "linreg",
            "task": f"linreg w={self.data.w_true} b={self.data.b_true}",
            "w_true": self.data.w_true,
            "b_true": self.data.b_true,
            "points": len(self.data.x),
            "data_seed": list(self.data.seed),
            "data_sha": self.data.digest(),
            "start_seed": list(self.start_seed),
            "starts": [list(p) for p in self.starts],
        }

    def initial_solutions(self) -> list[str]:
        return [format_pair(w, b) for w, b in self.starts]

    def baselines(self) -> list[str]:
        """The optimum, so the final table shows how far the best proposal is from it."""
        return [format_pair(*self.optimum)]

    def meta_prompt(
        self, history: Sequence[Scored], cfg: MetaPromptConfig, rng: random.Random
    ) -> MetaPrompt:
        return build_meta_prompt(history, self.part, cfg, rng, higher_is_better=False)

    def parse(self, answer: str, cfg: MetaPromptConfig) -> list[str]:
        found = find_pair(answer)
        return [found] if found is not None else []

    def check(self, candidate: str) -> tuple[str, str | None]:
        return check_pair(candidate)

    def solved(self, solution: str) -> bool:
        """Whether `solution` is the integer optimum: the loop stops once it is proposed."""
        return solution == format_pair(*self.optimum)

    async def score(self, solutions: Sequence[str], split: SplitName) -> list[SolutionScore]:
        out: list[SolutionScore] = []
        for solution in solutions:
            pair = parse_pair(solution)
            if pair is None:
                raise ValueError(f"not a canonical (w, b) pair: {solution!r}")
            out.append(SolutionScore(score=loss(self.data, *pair), detail={"pair": list(pair)}))
        return out


@dataclass(frozen=True, slots=True)
class LinregRun:
    """The outcome of one run: None steps when the step cap came first."""

    w_true: int
    b_true: int
    run: int
    steps: int | None
    unique_pairs: int
    invalid: int = 0


def mean_std(values: Sequence[float]) -> tuple[float, float] | None:
    """Mean and population standard deviation (numpy's default, as the paper reports)."""
    if not values:
        return None
    return statistics.fmean(values), statistics.pstdev(values)


def fmt_mean_std(values: Sequence[float], digits: int = 1) -> str:
    stats = mean_std(values)
    if stats is None:
        return "-"
    mean, std = (round(v, digits) + 0.0 for v in stats)  # + 0.0: no "-0.0"
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def summarize(runs: Sequence[LinregRun]) -> list[dict[str, Any]]:
    """One row per (w_true, b_true) in first-seen order: the solved runs' steps and pairs."""
    settings: dict[tuple[int, int], list[LinregRun]] = {}
    for run in runs:
        settings.setdefault((run.w_true, run.b_true), []).append(run)
    rows = []
    for (w, b), group in settings.items():
        solved = [r for r in group if r.steps is not None]
        steps = [float(r.steps) for r in solved if r.steps is not None]
        pairs = [float(r.unique_pairs) for r in solved]
        rows.append(
            {
                "w_true": w,
                "b_true": b,
                "runs": len(group),
                "solved": len(solved),
                "steps": steps,
                "unique_pairs": pairs,
                "steps_mean_std": mean_std(steps),
                "unique_pairs_mean_std": mean_std(pairs),
                "invalid": sum(r.invalid for r in group),
            }
        )
    return rows


def render_table(rows: Sequence[dict[str, Any]], optimizer: str) -> str:
    """The paper's Table 2 layout: steps to the optimum and unique pairs, per setting."""
    head = f"{'w_true':>6} {'b_true':>6}  {'# steps':>16}  {'# unique (w, b)':>16}  solved"
    lines = [f"linear regression, optimizer {optimizer}", head, "-" * len(head)]
    for row in rows:
        steps = fmt_mean_std(row["steps"])
        pairs = fmt_mean_std(row["unique_pairs"])
        lines.append(
            f"{row['w_true']:>6} {row['b_true']:>6}  {steps:>16}  {pairs:>16}  "
            f"{row['solved']}/{row['runs']}"
        )
    lines.append(
        "mean +- std over the runs that reached the optimum; unique pairs include the "
        f"{N_STARTS} starting pairs"
    )
    return "\n".join(lines) + "\n"
