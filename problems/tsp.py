"""The travelling salesman problem as an OPRO `Problem`: the paper's section 3.2 and Table 3.

An instance is n points with integer coordinates in [-100, 100], drawn from a seeded numpy
generator. A solution is a tour spelled "0,3,1,2": it starts at node 0, visits every node once
and implicitly returns to node 0; its score is its Euclidean length, so lower is better. The
run starts from 5 random tours (never an optimal one). The meta-prompt lists the points, then
the best tours so far with their lengths rounded to integers, longest first (the paper's order:
the best sit next to the request), then asks for a shorter tour between <trace> tags.

Answers are read with regexes (`find_tour`): the last <trace>...</trace>, else the last
bracketed list, else the last chain of numbers joined by commas or arrows. `check_tour` then
keeps only permutations from node 0; a closing return to node 0 ("0,2,1,0") is accepted as
the same tour. Rejected tours are logged with their reason and counted in the table.

`TspReference` holds what the table compares against: the exact optimum from CP-SAT (and,
for n <= 12, Held-Karp as a cross-check) and the nearest-neighbour and farthest-insertion
baselines of `tsp_solvers`, the latter twice: the textbook rule and the variant the paper's
code runs (the one its Table 3 reports), labelled apart in the table. A run is solved, and
stops, when a tour as short as the optimum is proposed.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from opro.errors import SettingsError
from opro.optimize.metaprompt import MetaPrompt, MetaPromptConfig, Scored, build_meta_prompt
from opro.optimize.problem import SolutionScore, SplitName
from opro.problems.linreg import fmt_mean_std, mean_std
from opro.problems.tsp_solvers import (
    HELD_KARP_MAX,
    Point,
    cp_sat_tour,
    distance_matrix,
    farthest_insertion,
    farthest_insertion_reference,
    held_karp,
    nearest_neighbour,
    tour_length,
)

COORD_RANGE = (-100, 100)
N_STARTS = 5
MIN_NODES = 5  # fewer nodes leave too few distinct non-optimal starting tours
SOLVED_TOLERANCE = 1e-6  # relative: a tour this close to the optimum's length is optimal

_TRACE = re.compile(r"<trace>(.*?)</trace>", re.IGNORECASE | re.DOTALL)
_OPEN_TRACE = re.compile(r"<trace>", re.IGNORECASE)
_LISTED = re.compile(r"\[([^\[\]]*\d[^\[\]]*)\]")
_CHAIN = re.compile(r"\d+(?:\s*(?:,|->|\u2192)\s*\d+){2,}")
_INTEGER = re.compile(r"(?<!\d)-?\d+")  # "0-3-1" is a chain, "-3" a negative


@dataclass(frozen=True, slots=True)
class TspInstance:
    points: tuple[Point, ...]
    seed: tuple[int, ...]

    @property
    def n(self) -> int:
        return len(self.points)

    def digest(self) -> str:
        text = ";".join(f"{x},{y}" for x, y in self.points)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_instance(n: int, *, seed: Sequence[int] = (0,)) -> TspInstance:
    """n points with integer coordinates drawn uniformly from COORD_RANGE (both ends included)."""
    if n < MIN_NODES:
        raise SettingsError(f"a TSP instance needs at least {MIN_NODES} nodes, got {n}")
    low, high = COORD_RANGE
    raw = np.random.default_rng(list(seed)).integers(low, high + 1, size=(n, 2))
    return TspInstance(tuple((int(x), int(y)) for x, y in raw), tuple(seed))


@dataclass(frozen=True, slots=True)
class TspReference:
    """The optimum and the heuristic tours of one instance, with their lengths.

    `farthest_insertion` is the textbook rule, `farthest_insertion_ref` the paper's code's.
    """

    optimum: tuple[int, ...]
    optimum_length: float
    proven: bool
    nearest_neighbour: tuple[int, ...]
    farthest_insertion: tuple[int, ...]
    nn_length: float
    fi_length: float
    held_karp_length: float | None = None
    farthest_insertion_ref: tuple[int, ...] = ()
    fi_ref_length: float | None = None

    def gap(self, length: float) -> float:
        """Optimality gap in percent: how much longer than the optimum."""
        return 100.0 * (length - self.optimum_length) / self.optimum_length


def reference(instance: TspInstance, *, time_limit_s: float = 60.0) -> TspReference:
    """Solve the instance exactly (CP-SAT; Held-Karp too when n <= 12) and run the baselines.

    The reference is the shortest of all these tours. CP-SAT optimizes costs rounded to
    1/COST_SCALE, so an equally short tour summed in another order, or a heuristic tour within
    that rounding, may come out a hair shorter; taking the minimum keeps every gap >= 0.
    """
    dist = distance_matrix(instance.points)
    exact = cp_sat_tour(dist, time_limit_s=time_limit_s)
    nn, fi = nearest_neighbour(dist), farthest_insertion(dist)
    fi_ref = farthest_insertion_reference(dist)
    nn_length, fi_length = tour_length(dist, nn), tour_length(dist, fi)
    fi_ref_length = tour_length(dist, fi_ref)
    known = [(exact.length, tuple(exact.tour)), (nn_length, tuple(nn)), (fi_length, tuple(fi))]
    known.append((fi_ref_length, tuple(fi_ref)))
    hk_length: float | None = None
    if instance.n <= HELD_KARP_MAX:
        hk_length, hk_tour = held_karp(dist)
        known.append((hk_length, tuple(hk_tour)))
    length, optimum = min(known)
    return TspReference(
        optimum=optimum,
        optimum_length=length,
        proven=exact.proven or hk_length is not None,
        nearest_neighbour=tuple(nn),
        farthest_insertion=tuple(fi),
        nn_length=nn_length,
        fi_length=fi_length,
        held_karp_length=hk_length,
        farthest_insertion_ref=tuple(fi_ref),
        fi_ref_length=fi_ref_length,
    )


def format_tour(tour: Sequence[int]) -> str:
    return ",".join(map(str, tour))


def find_tour(answer: str) -> str | None:
    """The text of the last tour in an optimizer answer (see the module docstring), or None."""
    tagged = _TRACE.findall(answer)
    if tagged:
        return str(tagged[-1])
    opened = list(_OPEN_TRACE.finditer(answer))
    if opened:  # cut off before </trace>: what follows the tag, whatever it holds
        return answer[opened[-1].end() :]
    for pattern in (_LISTED, _CHAIN):
        found = list(pattern.finditer(answer))
        if found:
            return found[-1].group(0)
    return None


def check_tour(candidate: str, n: int) -> tuple[str, str | None]:
    """(canonical "0,3,1,2", rejection reason or None) for a tour of nodes 0..n-1."""
    nodes = [int(t) for t in _INTEGER.findall(candidate)]
    if not nodes:
        return candidate.strip(), "no nodes"
    if len(nodes) == n + 1 and nodes[0] == nodes[-1] == 0:
        nodes = nodes[:-1]  # written as a closed loop back to node 0
    canonical = format_tour(nodes)
    outside = [v for v in nodes if not 0 <= v < n]
    if outside:
        return canonical, f"node {outside[0]} does not exist (nodes are 0..{n - 1})"
    if nodes[0] != 0:
        return canonical, "does not start at node 0"
    seen: set[int] = set()
    for v in nodes:
        if v in seen:
            return canonical, f"visits node {v} twice"
        seen.add(v)
    if len(nodes) != n:
        missing = sorted(set(range(n)) - seen)
        return canonical, f"misses node{'s' * (len(missing) > 1)} {format_tour(missing)}"
    return canonical, None


def parse_tour(solution: str) -> list[int]:
    return [int(t) for t in solution.split(",")]


def starting_tours(
    instance: TspInstance, optimum_length: float, seed: Sequence[int], k: int = N_STARTS
) -> list[tuple[int, ...]]:
    """`k` distinct random tours from node 0, none as short as the optimum."""
    rng = np.random.default_rng(list(seed))
    dist = distance_matrix(instance.points)
    tours: list[tuple[int, ...]] = []
    while len(tours) < k:
        tour = (0, *(int(v) + 1 for v in rng.permutation(instance.n - 1)))
        if tour not in tours and not _is_optimal(tour_length(dist, tour), optimum_length):
            tours.append(tour)
    return tours


def _is_optimal(length: float, optimum_length: float) -> bool:
    return length <= optimum_length * (1 + SOLVED_TOLERANCE)


def _order_words(cfg: MetaPromptConfig) -> str:
    if cfg.order == "random":
        return "in no particular order"
    if cfg.order == "ascending":  # worst to best: the longest first
        return "from the longest to the shortest"
    return "from the shortest to the longest"


@dataclass(frozen=True, slots=True)
class TspPart:
    """The meta-prompt wording: the coordinates, then earlier tours ("traces") and lengths."""

    points: tuple[Point, ...]

    def intro(self, cfg: MetaPromptConfig) -> str:
        coords = ", ".join(f"({i}): ({x}, {y})" for i, (x, y) in enumerate(self.points))
        return (
            f"Here are {len(self.points)} points with their coordinates:\n{coords}\n\n"
            "Below are some traces through these points, each followed by its length, listed "
            f"{_order_words(cfg)}. A trace starts at point 0, visits every point once and "
            "returns to point 0. A shorter length is better."
        )

    def entry(self, item: Scored, cfg: MetaPromptConfig) -> str:
        return f"<trace>{item.solution}</trace>\nlength: {round(item.score)}"

    def examples(self, rng: random.Random, cfg: MetaPromptConfig) -> tuple[str, tuple[str, ...]]:
        return "", ()

    def outro(self, cfg: MetaPromptConfig) -> str:
        return (
            "Give one new trace that is different from every trace above and shorter than all "
            "of them. It must start at point 0 and visit every point exactly once. Do not write "
            "code. End your answer with the trace as comma-separated point numbers between "
            "<trace> and </trace>."
        )


class TspProblem:
    """Find the shortest tour of one instance; the reference supplies the optimum."""

    higher_is_better = False
    splits: frozenset[SplitName] = frozenset({"train"})

    def __init__(
        self, instance: TspInstance, ref: TspReference, *, start_seed: Sequence[int] = (0, 1)
    ) -> None:
        self.instance = instance
        self.ref = ref
        self.dist = distance_matrix(instance.points)
        self.start_seed = tuple(start_seed)
        self.starts = starting_tours(instance, ref.optimum_length, start_seed)
        self.part = TspPart(instance.points)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "tsp",
            "task": f"tsp n={self.instance.n}",
            "n": self.instance.n,
            "seed": list(self.instance.seed),
            "points_sha": self.instance.digest(),
            "start_seed": list(self.start_seed),
            "starts": [format_tour(t) for t in self.starts],
        }

    def initial_solutions(self) -> list[str]:
        return [format_tour(t) for t in self.starts]

    def baselines(self) -> list[str]:
        """The heuristic tours and the optimum, beside the best tours in the final table."""
        ref = self.ref
        heuristics = [ref.nearest_neighbour, ref.farthest_insertion, ref.farthest_insertion_ref]
        return [format_tour(t) for t in heuristics if t] + [format_tour(ref.optimum)]

    def meta_prompt(
        self, history: Sequence[Scored], cfg: MetaPromptConfig, rng: random.Random
    ) -> MetaPrompt:
        return build_meta_prompt(history, self.part, cfg, rng, higher_is_better=False)

    def parse(self, answer: str, cfg: MetaPromptConfig) -> list[str]:
        found = find_tour(answer)
        return [found] if found is not None else []

    def check(self, candidate: str) -> tuple[str, str | None]:
        return check_tour(candidate, self.instance.n)

    def length(self, solution: str) -> float:
        return tour_length(self.dist, parse_tour(solution))

    def solved(self, solution: str) -> bool:
        """Whether `solution` is as short as the optimum: the loop stops once one is found."""
        return _is_optimal(self.length(solution), self.ref.optimum_length)

    async def score(self, solutions: Sequence[str], split: SplitName) -> list[SolutionScore]:
        out = []
        for solution in solutions:
            if check_tour(solution, self.instance.n)[1] is not None:
                raise ValueError(f"not a valid tour: {solution!r}")
            out.append(SolutionScore(score=self.length(solution)))
        return out


@dataclass(frozen=True, slots=True)
class TspRun:
    """One instance's outcome: the best length found and the step that found the optimum."""

    n: int
    instance: int
    best_length: float | None  # None: no OPRO run (baselines only)
    steps: int | None
    ref: TspReference
    proposed: int = 0
    invalid: int = 0


def summarize(runs: Sequence[TspRun]) -> list[dict[str, Any]]:
    """One row per n in first-seen order: gaps of NN, both FIs and OPRO, steps of the solved
    runs. `fi` is the textbook farthest insertion, `fi_ref` the paper's code's variant."""
    by_n: dict[int, list[TspRun]] = {}
    for run in runs:
        by_n.setdefault(run.n, []).append(run)
    rows = []
    for n, group in by_n.items():
        steps = [float(r.steps) for r in group if r.steps is not None]
        gaps = {
            "nn": [r.ref.gap(r.ref.nn_length) for r in group],
            "fi": [r.ref.gap(r.ref.fi_length) for r in group],
            "fi_ref": [
                r.ref.gap(r.ref.fi_ref_length) for r in group if r.ref.fi_ref_length is not None
            ],
            "opro": [r.ref.gap(r.best_length) for r in group if r.best_length is not None],
        }
        rows.append(
            {
                "n": n,
                "instances": len(group),
                "runs": sum(r.best_length is not None for r in group),
                "solved": len(steps),
                "steps": steps,
                "steps_mean_std": mean_std(steps),
                "gaps": gaps,
                "gaps_mean_std": {k: mean_std(v) for k, v in gaps.items()},
                "proven": all(r.ref.proven for r in group),
                "proposed": sum(r.proposed for r in group),
                "invalid": sum(r.invalid for r in group),
            }
        )
    return rows


def render_table(rows: Sequence[dict[str, Any]], optimizer: str) -> str:
    """The paper's Table 3 layout: optimality gaps (%), then steps to the optimum (# solved)."""
    head = (
        f"{'n':>4}  {'NN gap %':>14}  {'FI-paper gap %':>14}  {'FI-textbook %':>14}  "
        f"{'OPRO gap %':>14}  {'# steps (# solved)':>22}  invalid"
    )
    lines = [f"TSP, optimizer {optimizer}", head, "-" * len(head)]
    for row in rows:
        gaps = row["gaps"]
        steps = f"{fmt_mean_std(row['steps'])} ({row['solved']}/{row['runs']})"
        if not row["runs"]:
            steps = "- (no runs)"
        mark = "" if row["proven"] else "  (optimum not proven)"
        lines.append(
            f"{row['n']:>4}  {fmt_mean_std(gaps['nn']):>14}  {fmt_mean_std(gaps['fi_ref']):>14}  "
            f"{fmt_mean_std(gaps['fi']):>14}  {fmt_mean_std(gaps['opro']):>14}  {steps:>22}  "
            f"{row['invalid']}/{row['proposed']}{mark}"
        )
    lines.append(
        "gap = (length - optimum) / optimum, mean +- std over instances; steps over solved ones"
    )
    lines.append(
        "FI-paper: farthest insertion as the paper's code runs it (its Table 3): insert the\n"
        "node whose cheapest insertion is the dearest; FI-textbook: the node farthest from the tour"
    )
    return "\n".join(lines) + "\n"
