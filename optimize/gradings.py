"""Both accuracies of a prompt through the optimizer loop: which one is optimized, where both go.

A `PromptProblem` reports each instruction's accuracy by our strict rules and by the paper's
reference rules (`SolutionScore.by_grading`) and how many answers hit the token limit. The loop
optimizes the one `OptimizeConfig.grading` names (the record's `score`, what the meta-prompt
shows and what picks the best) and carries all three into the step records, results.json and
summary.txt as `accuracy`, `accuracy_reference` and `truncated`. Problems that grade no answers
(linear regression, TSP) have none of this and keep their single score.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opro.optimize.problem import SolutionScore
from opro.tasks.grading import Grading

GRADING_FIELDS = ("accuracy", "accuracy_reference", "truncated")


def chosen_score(s: SolutionScore, grading: Grading) -> float | None:
    """The score the loop optimizes: the accuracy by `grading` for prompts, else the score."""
    return s.by_grading.get(grading) if s.by_grading else s.score


def grading_fields(s: SolutionScore) -> dict[str, Any]:
    """The record fields of a score; {} when the problem grades no answers."""
    if not s.by_grading:
        return {}
    strict, reference = s.by_grading.get("strict"), s.by_grading.get("reference")
    return {"accuracy": strict, "accuracy_reference": reference, "truncated": s.truncated}


def gradings_of(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The grading fields of a step record's entry, or None when it has none."""
    return {k: entry.get(k) for k in GRADING_FIELDS} if "accuracy" in entry else None


def final_gradings(
    solution: str, by_split: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> dict[str, Any]:
    """A final row's `accuracy`, `accuracy_reference` and `truncated`, each by split."""
    if not any(solution in found for found in by_split.values()):
        return {}
    return {
        name: {split: found.get(solution, {}).get(name) for split, found in by_split.items()}
        for name in GRADING_FIELDS
    }
