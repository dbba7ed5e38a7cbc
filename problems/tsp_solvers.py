"""Classical TSP solvers: the baselines and the references of the OPRO TSP demo (`tsp.py`).

Everything works on a symmetric distance matrix and returns a tour as a list of node indices
that starts at node 0 and visits every node once (the return to node 0 is implied).

* `nearest_neighbour` and `farthest_insertion` are the paper's two heuristic baselines;
  `farthest_insertion_reference` is the variant the paper's code runs under that name (see
  its docstring), which is what the paper's Table 3 reports.
* `cp_sat_tour` is the exact reference: OR-Tools CP-SAT with one Boolean per arc and its
  `AddCircuit` constraint. CP-SAT needs integer costs, so distances are scaled by
  `COST_SCALE` and rounded; the tour's length is then measured on the real distances.
* `held_karp` (dynamic programming, n <= 12) and `brute_force` (n <= 8) are exact and slow;
  they cross-check CP-SAT on small instances.

OR-Tools is an optional dependency (`pip install 'opro-engine[demos]'`), imported only when
`cp_sat_tour` runs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from opro.errors import OproError

Point = tuple[int, int]
Matrix = Sequence[Sequence[float]]

COST_SCALE = 10_000  # CP-SAT arc costs in units of 1/COST_SCALE
HELD_KARP_MAX = 12
BRUTE_FORCE_MAX = 8


class SolverError(OproError, RuntimeError):
    """The exact solver cannot answer: OR-Tools is missing, or no tour within the time limit."""


def distance_matrix(points: Sequence[Point]) -> list[list[float]]:
    return [[math.dist(p, q) for q in points] for p in points]


def tour_length(dist: Matrix, tour: Sequence[int]) -> float:
    """The length of the closed tour, including the way back to its first node."""
    return sum(dist[a][b] for a, b in zip(tour, [*tour[1:], tour[0]], strict=True))


def nearest_neighbour(dist: Matrix) -> list[int]:
    """From node 0, always go to the nearest unvisited node (ties: the lowest index)."""
    n = len(dist)
    tour = [0]
    left = set(range(1, n))
    while left:
        here = tour[-1]
        nearest = min(left, key=lambda j: (dist[here][j], j))
        tour.append(nearest)
        left.remove(nearest)
    return tour


def farthest_insertion(dist: Matrix) -> list[int]:
    """Farthest insertion (Rosenkrantz, Stearns and Lewis, 1977), starting from node 0.

    Repeatedly take the unvisited node farthest from the tour (its distance to the tour being
    that of its nearest tour node) and insert it where it lengthens the tour least. Ties go to
    the lowest node index and the earliest position, so the result is deterministic.
    """
    n = len(dist)
    tour = [0]
    to_tour = {j: dist[0][j] for j in range(1, n)}  # distance of each unvisited node to the tour
    while to_tour:
        node = max(to_tour, key=lambda j: (to_tour[j], -j))
        del to_tour[node]
        best_pos, best_cost = 1, math.inf
        for pos in range(len(tour)):  # between tour[pos] and the node after it
            a, b = tour[pos], tour[(pos + 1) % len(tour)]
            cost = dist[a][node] + dist[node][b] - dist[a][b]
            if cost < best_cost:
                best_pos, best_cost = pos + 1, cost
        tour.insert(best_pos, node)
        for j in to_tour:
            to_tour[j] = min(to_tour[j], dist[node][j])
    return tour


def farthest_insertion_reference(dist: Matrix, *, integer_lengths: bool = True) -> list[int]:
    """Farthest insertion as the paper's code (google-deepmind/opro, `optimize_tsp.py`) does it.

    Starting from [0], every unvisited node is priced at its cheapest insertion (the shortest
    tour it can be inserted into); the node whose cheapest insertion gives the longest tour
    goes in, at that cheapest position. The textbook rule instead picks the node farthest
    from the tour. As in that code, tour lengths are compared truncated to integers
    (`integer_lengths`), ties go to the lowest node index and the earliest position, and
    position 0 (before node 0) is never tried (the same place as after the last node).
    """
    n = len(dist)
    tour = [0]
    length = 0.0
    left = list(range(1, n))
    while left:
        best: tuple[float, int, int] | None = None  # (priced length, node, position)
        for node in left:
            cheapest: tuple[float, int] | None = None
            for pos in range(1, len(tour) + 1):  # between tour[pos - 1] and the node after
                a, b = tour[pos - 1], tour[pos % len(tour)]
                total = length + dist[a][node] + dist[node][b] - dist[a][b]
                priced = float(math.floor(total)) if integer_lengths else total
                if cheapest is None or priced < cheapest[0]:
                    cheapest = (priced, pos)
            assert cheapest is not None
            if best is None or cheapest[0] > best[0]:
                best = (cheapest[0], node, cheapest[1])
        assert best is not None
        _, node, pos = best
        a, b = tour[pos - 1], tour[pos % len(tour)]
        length += dist[a][node] + dist[node][b] - dist[a][b]
        tour.insert(pos, node)
        left.remove(node)
    return tour


def held_karp(dist: Matrix) -> tuple[float, list[int]]:
    """The exact optimum by dynamic programming over subsets: O(2^n n^2), for n <= 12."""
    n = len(dist)
    if n > HELD_KARP_MAX:
        raise ValueError(f"Held-Karp is for n <= {HELD_KARP_MAX}, got {n}")
    if n <= 2:
        tour = list(range(n))
        return tour_length(dist, tour) if n else 0.0, tour
    # best[mask][j]: shortest path from 0 through the nodes of mask (bits for 1..n-1), ending at j
    full = 1 << (n - 1)
    best = [[math.inf] * n for _ in range(full)]
    parent = [[-1] * n for _ in range(full)]
    for j in range(1, n):
        best[1 << (j - 1)][j] = dist[0][j]
    for mask in range(1, full):
        for j in range(1, n):
            here = best[mask][j]
            if here == math.inf:
                continue
            for k in range(1, n):
                bit = 1 << (k - 1)
                if mask & bit:
                    continue
                value = here + dist[j][k]
                if value < best[mask | bit][k]:
                    best[mask | bit][k] = value
                    parent[mask | bit][k] = j
    last = min(range(1, n), key=lambda j: best[full - 1][j] + dist[j][0])
    length = best[full - 1][last] + dist[last][0]
    tour, mask, node = [], full - 1, last
    while node > 0:
        tour.append(node)
        node, mask = parent[mask][node], mask & ~(1 << (node - 1))
    return length, [0, *reversed(tour)]


def brute_force(dist: Matrix) -> tuple[float, list[int]]:
    """The exact optimum by trying every tour from node 0; for n <= 8."""
    n = len(dist)
    if n > BRUTE_FORCE_MAX:
        raise ValueError(f"brute force is for n <= {BRUTE_FORCE_MAX}, got {n}")
    best: tuple[float, list[int]] | None = None
    for rest in itertools.permutations(range(1, n)):
        tour = [0, *rest]
        length = tour_length(dist, tour)
        if best is None or length < best[0]:
            best = (length, tour)
    return best if best is not None else (0.0, [0])


@dataclass(frozen=True, slots=True)
class ExactTour:
    """CP-SAT's answer: `proven` False means the time limit came first (best tour found)."""

    tour: list[int]
    length: float
    proven: bool


def cp_sat_tour(dist: Matrix, *, time_limit_s: float = 60.0, workers: int = 1) -> ExactTour:
    """The shortest tour by CP-SAT's circuit constraint (see the module docstring).

    One worker with the full linear relaxation (linearization level 2, which adds cuts to
    the circuit's LP) proves n = 50 optimal in about a second here, and is deterministic:
    the default portfolio of parallel workers was slower at the proof on two cores and may
    return a different one of several equally short tours from run to run.
    """
    try:
        from ortools.sat.python import cp_model
    except ImportError as exc:
        raise SolverError(
            "the exact TSP reference needs OR-Tools: pip install 'opro-engine[demos]'"
        ) from exc
    n = len(dist)
    if n < 3:
        raise ValueError(f"a tour needs at least 3 nodes, got {n}")
    model = cp_model.CpModel()
    arcs: list[tuple[int, int, cp_model.IntVar]] = []
    for i in range(n):
        for j in range(n):
            if i != j:
                arcs.append((i, j, model.new_bool_var(f"arc_{i}_{j}")))
    model.add_circuit(arcs)  # AddCircuit in the older CamelCase API
    model.minimize(sum(round(dist[i][j] * COST_SCALE) * lit for i, j, lit in arcs))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = workers
    solver.parameters.linearization_level = 2
    solver.parameters.random_seed = 0
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise SolverError(f"CP-SAT found no tour within {time_limit_s:g}s: raise the time limit")
    following = {i: j for i, j, lit in arcs if solver.boolean_value(lit)}
    tour = [0]
    while len(tour) < n:
        tour.append(following[tour[-1]])
    return ExactTour(tour, tour_length(dist, tour), status == cp_model.OPTIMAL)
