"""The step records of a run log: their types, how they are built, checked and read back.

`steps.jsonl` holds one `StepRecord` per line (`runlog` owns the file; this module owns what
a line means). A resumed run rebuilds everything the loop knows from these records, so they
are typed here once and every reader and writer uses the types: the loop writes them, resume
replays them, the demos count proposals in them.

The types are `TypedDict`s that spell out the JSON exactly (its field names are a public
format; older runs must keep resuming): a candidate is a `ScoredCandidate` (status `start` or
`new`: scored, so it carries its canonical text, score and error count), a `RacedCandidate`
(status `raced`: `--racing` stopped it part-way, so its score is partial and it never enters
the history) or an `OtherCandidate` (a duplicate, a rejected or a surplus proposal).
`step_record_problem` checks a parsed line against these annotations, so the check and the
types cannot drift apart; keys a record does not declare are free, so records may grow new
fields.

Counts and cost travel as `RunTotals` (a `Spend` plus cache hits and failed pairs) and turn
into the flat JSON fields (`calls`, `cache_hits`, `errors`, `tokens_in`, `tokens_out`,
`cost_usd`) only here.
"""

# No `from __future__ import annotations` here: Python 3.11 only sees Required/NotRequired
# in a TypedDict's annotations when they are evaluated, and the record checks read them.
import functools
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, Required, TypedDict, TypeGuard

from opro.engine.spend import NOTHING, Spend, SpendFields
from opro.optimize.problem import SolutionScore
from opro.optimize.racing import Raced

Status = Literal["start", "new", "duplicate", "rejected", "surplus", "raced"]
ScoredStatus = Literal["start", "new"]
SCORED: frozenset[Status] = frozenset(typing.get_args(ScoredStatus))
Kind = Literal["start", "optimize"]


class _NonNegative:
    """`Annotated` marker: the number may not be negative."""


NON_NEGATIVE = _NonNegative()
Count = Annotated[int, NON_NEGATIVE]
Amount = Annotated[float, NON_NEGATIVE]


class _Costs(TypedDict, total=False):
    calls: Count
    cache_hits: Count
    tokens_in: Count
    tokens_out: Count
    cost_usd: Amount


class CostFields(_Costs, total=False):
    """What a step cost (its `totals`): optimizer, scoring and validation together."""

    errors: Count  # failed pairs


class Scored(_Costs, total=False):
    """What scoring one solution cost, and its gradings (prompts only) and detail."""

    accuracy: float | None
    accuracy_reference: float | None
    truncated: Count
    detail: dict[str, Any]


class ScoredCandidate(Scored, total=False):
    """A solution scored in this step: a starting one (step 0) or a new proposal."""

    status: Required[ScoredStatus]
    canonical: Required[str]  # what was scored; the key of every later duplicate check
    score: Required[float | None]  # None: nothing could be graded
    errors: Required[Count]  # failed pairs: > 0 means the score rests on fewer examples
    text: str  # as proposed, or as given for a starting solution
    answer: Count  # which of the step's optimizer answers it came from


class OtherCandidate(TypedDict, total=False):
    """A proposal that was not scored: a duplicate (its score reused), rejected, or surplus."""

    status: Required[Literal["duplicate", "rejected", "surplus"]]
    text: str
    canonical: str
    answer: Count
    reason: str
    duplicate_of_step: Count
    score: float | None


class RacedCandidate(Scored, total=False):
    """A new proposal racing stopped (`optimize/racing.py`): scored on `graded` of the `total`
    training examples, its full-set accuracy is below `bound` < `threshold` with probability
    >= 1 - `alpha`. Never fully scored: kept out of the history, meta-prompts and final table,
    and a later proposal of it is a duplicate that is not scored again."""

    status: Required[Literal["raced"]]
    canonical: Required[str]
    score: Required[float | None]  # the accuracy on the examples it was graded on
    errors: Required[Count]
    graded: Required[Count]
    total: Required[Count]
    bound: Required[float]
    threshold: Required[float]
    alpha: Required[float]
    text: str
    answer: Count


Candidate = ScoredCandidate | OtherCandidate | RacedCandidate


class ValidationCheck(Scored, total=False):
    """The best solution so far, scored on the validation split (or its earlier score)."""

    solution: Required[str]
    score: float | None
    errors: Count
    reused: bool


class OptimizerCall(_Costs, total=False):
    """What the step's optimizer asks cost, and how long they took."""

    wall_s: float


class SpendDict(TypedDict):
    """`Spend.to_dict()`."""

    calls: Count
    tokens_in: Count
    tokens_out: Count
    cost_usd: Amount


class StepRecord(TypedDict):
    """One line of steps.jsonl: everything a step did, enough to replay it on resume."""

    step: Count
    candidates: list[Candidate]
    totals: CostFields
    kind: NotRequired[Kind]
    validation: NotRequired[ValidationCheck | None]
    spend: NotRequired[SpendDict]  # the run's total so far, over all sessions (the ledger)
    wall_s: NotRequired[float]
    seed: NotRequired[Count]
    temperature: NotRequired[float]
    exemplars: NotRequired[list[str]]
    meta_prompt: NotRequired[str]
    answers: NotRequired[list[str]]
    optimizer: NotRequired[OptimizerCall]
    extraction_failures: NotRequired[Count]  # optimizer answers that held no candidate
    asks: NotRequired[Count]
    invalid: NotRequired[Count]
    # EvoPrompt strategies (evoprompt.py): one ask per child, and the population after the step
    meta_prompts: NotRequired[list[str]]
    parents: NotRequired[list[list[str]]]
    population: NotRequired[list[str]]


@dataclass(frozen=True, slots=True)
class RunTotals(SpendFields):
    """Calls, tokens and cost (`spend`), cache hits and failed pairs: of a step, or a run."""

    spend: Spend = NOTHING
    cache_hits: int = 0
    errors: int = 0

    def __add__(self, other: "RunTotals") -> "RunTotals":
        return RunTotals(
            self.spend + other.spend, self.cache_hits + other.cache_hits, self.errors + other.errors
        )

    @classmethod
    def of(cls, score: SolutionScore) -> "RunTotals":
        return cls(score.spend, score.cache_hits, score.errors)

    def to_dict(self) -> CostFields:
        totals: CostFields = {"errors": self.errors}
        _put_costs(totals, self)
        return totals

    @classmethod
    def from_dict(cls, data: CostFields) -> "RunTotals":
        """Totals read back from a checked record (a missing field counts as 0)."""
        spend = Spend.from_dict({**NOTHING.to_dict(), **data})
        assert spend is not None, "checked by step_record_problem"
        return cls(spend, data.get("cache_hits", 0), data.get("errors", 0))


def _put_costs(entry: _Costs, totals: RunTotals) -> None:
    entry.update(typing.cast(_Costs, totals.spend.to_dict()))  # calls, tokens, cost_usd
    entry["cache_hits"] = totals.cache_hits


def _put_score(entry: Scored, s: SolutionScore) -> None:
    """A scored solution's costs, gradings (prompts only) and detail, into its entry."""
    _put_costs(entry, RunTotals.of(s))
    if s.by_grading:
        entry["accuracy"] = s.by_grading.get("strict")
        entry["accuracy_reference"] = s.by_grading.get("reference")
        entry["truncated"] = s.truncated
    entry["detail"] = dict(s.detail)


def scored_candidate(
    status: ScoredStatus,
    text: str,
    canonical: str,
    score: float | None,
    s: SolutionScore,
    answer: int | None = None,
) -> ScoredCandidate:
    """The entry of a solution this step scored; `score` is the one the loop optimizes."""
    entry: ScoredCandidate = {
        "status": status, "text": text, "canonical": canonical, "score": score,
        "errors": s.errors,
    }  # fmt: skip
    if answer is not None:
        entry["answer"] = answer
    _put_score(entry, s)
    return entry


def raced_candidate(
    text: str,
    canonical: str,
    score: float | None,
    s: SolutionScore,
    raced: Raced,
    answer: int | None = None,
) -> RacedCandidate:
    """The entry of a proposal racing stopped; `score` is its partial accuracy."""
    entry: RacedCandidate = {
        "status": "raced", "text": text, "canonical": canonical, "score": score,
        "errors": s.errors, "graded": raced.graded, "total": raced.total,
        "bound": raced.bound, "threshold": raced.threshold, "alpha": raced.alpha,
    }  # fmt: skip
    if answer is not None:
        entry["answer"] = answer
    _put_score(entry, s)
    return entry


def validation_check(solution: str, score: float | None, s: SolutionScore) -> ValidationCheck:
    """The record of scoring `solution` on the validation split."""
    check: ValidationCheck = {
        "solution": solution, "reused": False, "score": score, "errors": s.errors
    }  # fmt: skip
    _put_score(check, s)
    return check


def optimizer_call(totals: RunTotals, wall_s: float) -> OptimizerCall:
    call: OptimizerCall = {"wall_s": round(wall_s, 6)}
    _put_costs(call, totals)
    return call


def spend_record(spend: Spend) -> SpendDict:
    return typing.cast(SpendDict, spend.to_dict())


def wrong_examples(entry: Scored) -> tuple[int, ...] | None:
    """The training examples a scored candidate got wrong, when its record says."""
    wrong = entry.get("detail", {}).get("wrong")
    return tuple(wrong) if isinstance(wrong, list) else None


def is_scored(c: Candidate) -> TypeGuard[ScoredCandidate]:
    return c["status"] in SCORED


def no_candidate(answer: int) -> OtherCandidate:
    """The entry of an optimizer answer that held no candidate (an extraction failure)."""
    return {"answer": answer, "text": "", "status": "rejected", "reason": "no candidate"}


def proposals(records: Iterable[StepRecord]) -> list[Candidate]:
    """Every candidate the optimizer proposed (step 0 holds the starting solutions)."""
    return [c for r in records if r["step"] > 0 for c in r["candidates"]]


# -- checking a parsed line against the types ---------------------------------------------


def step_record_problem(record: Any) -> str | None:
    """What makes `record` unusable as a step record (resume replays it), or None.

    Every declared field that is present must have its declared type (required ones must be
    present); undeclared keys are free.
    """
    if not isinstance(record, dict):
        kind = "null" if record is None else type(record).__name__
        return f"a JSON {kind}, not an object"
    return _problem(record, StepRecord, "")


def as_step_record(data: Any) -> StepRecord:
    """`data` as a `StepRecord`, after `step_record_problem` found nothing wrong with it."""
    return typing.cast(StepRecord, data)


def _problem(value: Any, tp: Any, path: str) -> str | None:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Required, NotRequired):
        return _problem(value, args[0], path)
    if origin is Annotated:
        found = _problem(value, args[0], path)
        if found is None and NON_NEGATIVE in args[1:] and value < 0:
            return f"{path}: {value!r} is negative"
        return found
    if tp is Any:
        return None
    if typing.is_typeddict(tp):
        return _typeddict_problem(value, tp, path)
    if origin in (types.UnionType, typing.Union):
        return _union_problem(value, args, path)
    if _fits(value, tp):
        return None
    return f"{path or 'record'}: {_shown(value)} is not {_describe(tp)}"


def _fits(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin is list:
        return isinstance(value, list)  # elements are checked by the caller below
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    if tp is str:
        return isinstance(value, str)
    raise TypeError(f"step records cannot declare {tp!r}")  # a bug in the types above


def _typeddict_problem(value: Any, tp: Any, path: str) -> str | None:
    if not isinstance(value, dict):
        return f"{path or 'record'}: {_shown(value)} is not an object"
    for key, hint in _hints(tp).items():
        if key not in value:
            if key in tp.__required_keys__:
                return f"{_join(path, key)} is missing"
            continue
        found = _problem(value[key], hint, _join(path, key))
        if found is None and typing.get_origin(_bare(hint)) is list:
            (item,) = typing.get_args(_bare(hint))
            for i, element in enumerate(value[key]):
                found = _problem(element, item, f"{_join(path, key)}[{i}]")
                if found is not None:
                    break
        if found is not None:
            return found
    return None


def _union_problem(value: Any, arms: tuple[Any, ...], path: str) -> str | None:
    problems = []
    for arm in arms:
        found = _problem(value, arm, path)
        if found is None:
            return None
        problems.append((arm, found))
    if len({p for _, p in problems}) == 1:
        return problems[0][1]  # e.g. a candidate without a status
    # Objects told apart by a Literal field (a candidate's `status`): report against the arm
    # the value's tag selects, or say that the tag is missing or unknown.
    objects = [p for arm, p in problems if typing.is_typeddict(arm)]
    if isinstance(value, dict) and len(objects) == 1:
        return objects[0]  # e.g. a validation check (or null)
    tag = _tag(arms) if isinstance(value, dict) else None
    if tag is not None:
        selected = [p for arm, p in problems if _fits(value.get(tag), _bare(_hints(arm)[tag]))]
        if selected:
            return selected[0]
        if tag not in value:
            return f"{_join(path, tag)} is missing"
        known = [a for arm in arms for a in typing.get_args(_bare(_hints(arm)[tag]))]
        listed = ", ".join(map(repr, known))
        return f"{_join(path, tag)}: {_shown(value[tag])} is not one of {listed}"
    what = " or ".join(_describe(arm) for arm in arms)
    return f"{path or 'record'}: {_shown(value)} is not {what}"


def _tag(arms: tuple[Any, ...]) -> str | None:
    """The Literal-typed key every arm (a TypedDict) has, if there is one."""
    if not all(typing.is_typeddict(arm) for arm in arms):
        return None
    keys = [
        {k for k, h in _hints(arm).items() if typing.get_origin(_bare(h)) is Literal}
        for arm in arms
    ]
    common = set.intersection(*keys)
    return min(common) if common else None


@functools.cache
def _hints(tp: Any) -> dict[str, Any]:
    return typing.get_type_hints(tp, include_extras=True)


def _bare(tp: Any) -> Any:
    """`tp` without Required/NotRequired/Annotated around it."""
    while typing.get_origin(tp) in (Required, NotRequired, Annotated):
        tp = typing.get_args(tp)[0]
    return tp


def _describe(tp: Any) -> str:
    tp = _bare(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return "a list"
    if typing.is_typeddict(tp):
        return "an object"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(tp, "null" if tp is type(None) else "an object")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
