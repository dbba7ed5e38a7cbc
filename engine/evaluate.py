"""Fan-out of (instruction, example) pairs to the scorer and aggregation per instruction.

Data enters as instructions, examples and a scorer `Model`; it leaves as an `EvalReport`
with one score per instruction as given. On the way: each instruction is sent exactly as
given, and instructions whose prompts would be identical are scored once (`dedup.dedupe`
only recognises duplicates, it never rewrites what is sent); every pair's prompt is
rendered and looked up in the cache synchronously (a warm rerun creates no tasks at all);
the misses are drained by a pool of workers through `Model.generate`, which owns
single-flight, limits, budget and retries. A pair whose call finally fails counts as an
error, never as a wrong answer; a fatal failure that would hit every pair (bad key, unknown
model) aborts the evaluation instead of producing thousands of errors. When the budget
cannot cover another call, no new pair is started, the calls in flight finish, and the
report says `stopped="budget"` with the unevaluated pairs counted as skipped. When the
server asks the connection to pause longer than the engine waits, the calls in flight
finish (and are cached) and `ConnectionRateLimited` is raised.

Every answer is graded twice when a `reference_grader` is given: `accuracy` by `grader` (our
strict rules) and `accuracy_reference` by the paper's rules, so the gap is visible per
instruction; `grading` names the one that ranks instructions (`best()`). Answers the scorer
cut at its token limit are counted (`truncated`): a cut chain of thought is graded as it is.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Protocol

from opro.caches.base import CacheStats, flush_writes
from opro.checks import COUNT, FRACTION
from opro.engine.budget import BudgetExceeded
from opro.engine.dedup import dedupe
from opro.engine.limits import ConnectionRateLimited
from opro.engine.model import Generation, Model, ModelCallError, Price
from opro.engine.spend import NOTHING, Spend, SpendFields
from opro.errors import OproError, SettingsError
from opro.providers.errors import BadRequestError, FatalError
from opro.providers.types import Usage
from opro.tasks.grading import GRADINGS, Grading
from opro.tasks.prompts import Position, render_prompt
from opro.tasks.types import Example

log = logging.getLogger("opro.evaluate")

# Finish reasons that mean the answer hit the max-token limit ("max_tokens": Gemini, lower-cased).
TRUNCATED_REASONS = frozenset({"length", "max_tokens"})


class Grader(Protocol):
    """Decides whether a prediction answers an example; `version` goes into reports.

    A grader may also offer `prepare(example) -> Callable[[str], bool]`: the grader of that
    one example, with the example's share of the work (parsing the target and the options)
    done once. `evaluate` then calls it once per example instead of grading from scratch for
    every (instruction, example) pair (`TaskGrader` does). A prepared check must be a pure
    function of the text: `evaluate` reuses its verdict when a short answer repeats.
    """

    @property
    def version(self) -> str: ...

    def __call__(self, prediction: str, example: Example) -> bool: ...


class EvaluationAborted(OproError):
    """A failure that no retry or other example can get around (key, model, quota), or
    more failed pairs than the `ErrorPolicy` tolerates."""


@dataclass(frozen=True, slots=True)
class ErrorPolicy:
    """When failed pairs stop an evaluation instead of leaving scores on partial data.

    `max_errors` is an absolute count; `max_error_rate` applies once `min_pairs` pairs
    have finished, so one early failure in a small run does not abort it.
    """

    max_errors: int | None = None
    max_error_rate: float | None = None
    min_pairs: int = 20

    def __post_init__(self) -> None:
        if self.max_errors is not None:
            COUNT.check("max errors", self.max_errors)
        if self.max_error_rate is not None:
            FRACTION.check("max error rate", self.max_error_rate)
        COUNT.check("min pairs", self.min_pairs)

    def violated(self, errors: int, done: int) -> str | None:
        if self.max_errors is not None and errors > self.max_errors:
            return f"{errors} failed pairs, more than the {self.max_errors} allowed (--max-errors)"
        if (
            self.max_error_rate is not None
            and done >= self.min_pairs
            and errors > self.max_error_rate * done
        ):
            return (
                f"{errors} of {done} pairs failed, more than {100 * self.max_error_rate:g}% "
                "(--max-error-rate)"
            )
        return None


@dataclass(slots=True)
class InstructionScore(SpendFields):
    """One instruction's score; `spend` is what its pairs paid (`calls`, `tokens_in`, ...
    read through to it)."""

    instruction: str
    canonical: str
    duplicate_of: int | None
    accuracy: float | None
    correct: int
    n: int
    errors: int
    spend: Spend
    cache_hits: int
    skipped: int = 0
    error_messages: list[str] = field(default_factory=list)
    accuracy_reference: float | None = None
    correct_reference: int | None = None
    truncated: int = 0
    wrong: list[int] = field(default_factory=list)  # indices of the examples graded wrong

    @property
    def graded(self) -> int:
        """How many examples the accuracy rests on (errors are not graded)."""
        return self.n - self.errors

    def score(self, grading: Grading = "strict") -> float | None:
        """The accuracy by one set of rules: `accuracy` (strict) or `accuracy_reference`."""
        return self.accuracy_reference if grading == "reference" else self.accuracy

    def to_dict(self) -> dict[str, Any]:
        """The report's JSON entry: `spend` spread into calls, tokens_in, tokens_out, cost_usd."""
        return _spread(asdict(self))


@dataclass(slots=True)
class Totals(SpendFields):
    pairs: int = 0
    spend: Spend = NOTHING
    cache_hits: int = 0
    cache_unreadable: int = 0  # damaged cache entries met (misses, so paid again)
    cache_write_errors: int = 0  # results the cache could not store (kept in memory)
    errors: int = 0
    n429: int = 0
    wall_s: float = 0.0
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return _spread(asdict(self))


def _spread(fields: dict[str, Any]) -> dict[str, Any]:
    """A report dict with its nested `spend` replaced by the spend's own fields, in place."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "spend":
            out.update(value)
        else:
            out[name] = value
    return out


@dataclass(slots=True)
class EvalReport:
    scorer: str
    position: str
    grader_version: str
    instructions: list[InstructionScore]
    totals: Totals
    stopped: str | None = None  # "budget" when the budget ended the evaluation early
    grading: Grading = "strict"  # which accuracy ranks the instructions
    reference_grader_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (`opro evaluate --out`): spends spread into their fields."""
        return {
            **asdict(self),
            "instructions": [s.to_dict() for s in self.instructions],
            "totals": self.totals.to_dict(),
        }

    def best(self) -> InstructionScore:
        return max(self.instructions, key=lambda s: (s.score(self.grading) or 0.0, -s.errors))


@dataclass(slots=True)
class Progress:
    """A snapshot for progress displays: pairs done of total and what they cost."""

    done: int
    total: int
    calls: int
    cache_hits: int
    errors: int
    n429: int


@dataclass(slots=True)
class _Acc:
    """One instruction's pairs so far (plain ints on the hot path: `_report` turns calls and
    tokens into its `Spend`, priced at the scorer's price)."""

    correct: int = 0
    n: int = 0
    errors: int = 0
    calls: int = 0
    cache_hits: int = 0
    n429: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    messages: list[str] = field(default_factory=list)
    correct_reference: int = 0
    truncated: int = 0
    wrong: list[int] = field(default_factory=list)
    # Tokens of pairs answered beforehand and what they cost, at their own price.
    answered_in: int = 0
    answered_out: int = 0
    answered_usd: float = 0.0

    def add(
        self, generation: Generation, correct: bool, correct_reference: bool, example: int
    ) -> None:
        self.n += 1
        self.correct += correct
        self.correct_reference += correct_reference
        if not correct:
            self.wrong.append(example)
        finish = generation.completion.finish_reasons
        self.truncated += bool(finish) and finish[0] in TRUNCATED_REASONS
        self.calls += generation.calls
        self.n429 += generation.n429
        self.cache_hits += generation.cached or generation.shared
        self.tokens_in += generation.usage.input_tokens
        self.tokens_out += generation.usage.output_tokens

    def fail(self, error: ModelCallError) -> None:
        self.n += 1
        self.errors += 1
        self.calls += error.attempts
        self.n429 += error.n429
        self.tokens_in += error.paid.tokens_in
        self.tokens_out += error.paid.tokens_out
        if len(self.messages) < 3:
            self.messages.append(str(error))

    def refused(self, stop: BudgetExceeded) -> None:
        """A pair the budget stopped: skipped, but its earlier attempts were paid for."""
        self.calls += stop.paid.calls
        self.n429 += stop.n429
        self.tokens_in += stop.paid.tokens_in
        self.tokens_out += stop.paid.tokens_out


_Pair = tuple[int, int, str, str]  # instruction, example index, prompt, cache key
_Check = Callable[[str], bool]
# Pairs rendered, keyed and looked up in the cache together (one cache query per chunk).
LOOKUP_CHUNK = 256
# Verdicts remembered per example for answers up to this long ("(B)", "True", "72"): models
# that answer directly repeat them across instructions. A bound, so memory stays small.
MEMO_TEXT_CHARS = 64
MEMO_PER_EXAMPLE = 16
_NO_USAGE = Usage()  # what a cache hit cost (shared: Usage is immutable)


def _prepared(grader: Grader, example: Example) -> _Check | None:
    """`grader` for one example, when it can prepare one (see `Grader`)."""
    prepare = getattr(grader, "prepare", None)
    if prepare is None:
        return None
    check: _Check = prepare(example)
    return check


class _Example:
    """One example's prepared checks and the verdicts of its short answers so far."""

    __slots__ = ("main", "memo", "reference")

    def __init__(self, main: _Check, reference: _Check | None) -> None:
        self.main = main
        self.reference = reference
        self.memo: dict[str, tuple[bool, bool]] = {}

    def grade(self, text: str) -> tuple[bool, bool]:
        verdict = self.memo.get(text)
        if verdict is None:
            ref = self.reference
            verdict = (self.main(text), ref is not None and ref(text))
            if len(text) <= MEMO_TEXT_CHARS and len(self.memo) < MEMO_PER_EXAMPLE:
                self.memo[text] = verdict
        return verdict


class _Graders:
    """The grader that gives `accuracy` and the optional one that gives `accuracy_reference`.

    Graders that can `prepare` are prepared once per example on first use, and their
    verdicts on short answers are reused; others are called for every answer.
    """

    __slots__ = ("_prepared", "examples", "main", "preparing", "reference")

    def __init__(self, main: Grader, reference: Grader | None, examples: Sequence[Example]):
        self.main = main
        self.reference = reference
        self.examples = examples
        self.preparing = hasattr(main, "prepare") and (
            reference is None or hasattr(reference, "prepare")
        )
        self._prepared: list[_Example | None] = [None] * len(examples)

    def add(self, acc: _Acc, generation: Generation, index: int) -> None:
        """Grade one answer to the `index`-th example by both graders into `acc`."""
        text = generation.completion.text
        if not self.preparing:
            example = self.examples[index]
            ref = self.reference is not None and self.reference(text, example)
            acc.add(generation, self.main(text, example), ref, index)
            return
        prepared = self._prepared[index]
        if prepared is None:
            prepared = self._prepared[index] = self._prepare(self.examples[index])
        correct, correct_reference = prepared.grade(text)
        acc.add(generation, correct, correct_reference, index)

    def _prepare(self, example: Example) -> _Example:
        main = _prepared(self.main, example)
        assert main is not None
        reference = _prepared(self.reference, example) if self.reference is not None else None
        return _Example(main, reference)


class _Tally:
    """Running totals for progress reports, so a report costs O(1), not O(instructions)."""

    __slots__ = ("calls", "done", "errors", "hits")

    def __init__(self) -> None:
        self.done = self.calls = self.hits = self.errors = 0

    def track(self, acc: _Acc) -> tuple[int, int, int, int]:
        return acc.n, acc.calls, acc.cache_hits, acc.errors

    def update(self, before: tuple[int, int, int, int], acc: _Acc) -> None:
        """Add what changed in `acc` since `track(acc)` returned `before`."""
        self.done += acc.n - before[0]
        self.calls += acc.calls - before[1]
        self.hits += acc.cache_hits - before[2]
        self.errors += acc.errors - before[3]


def _aborts(error: ModelCallError) -> bool:
    err = error.error
    if isinstance(err, BadRequestError):
        return err.status == 404  # an unknown model or endpoint fails every pair
    return isinstance(err, FatalError)


async def evaluate(
    instructions: Sequence[str],
    examples: Sequence[Example],
    scorer: Model,
    *,
    grader: Grader,
    reference_grader: Grader | None = None,
    grading: Grading = "strict",
    position: Position = "Q_begin",
    qa_framing: bool | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    workers: int | None = None,
    errors: ErrorPolicy | None = None,
    flow: Hashable = None,
    answered: dict[str, Generation | ModelCallError | BudgetExceeded] | None = None,
    answered_price: Price | None = None,
) -> EvalReport:
    """Score every instruction on every example; see the module docstring.

    `flow` names who the calls are for (a sweep's task): the connection serves the calls
    of concurrent evaluations round-robin across flows, so none waits behind another's
    backlog. `answered` holds pairs already paid for elsewhere (a batch, `engine.batch`),
    by cache key: each entry is consumed by the first pair with its key and counted as
    that pair's call (or failure; a `BudgetExceeded` skips every pair with the key); a
    later pair with the same key reads the cache. Their tokens are priced at
    `answered_price` (a batch's), not at the scorer's."""
    started = time.perf_counter()
    if grading not in GRADINGS:
        raise SettingsError(f"grading must be one of {', '.join(GRADINGS)}, got {grading!r}")
    if grading == "reference" and reference_grader is None:
        raise SettingsError("grading by the reference rules needs a reference_grader")
    graders = _Graders(grader, reference_grader, examples)
    if not instructions:
        raise SettingsError("no instructions to evaluate")
    if not examples:
        raise SettingsError("no examples to evaluate on")
    unique, index = dedupe(instructions)
    damage_before = _cache_damage(scorer)
    accs = [_Acc() for _ in unique]
    total = len(unique) * len(examples)
    tally = _Tally()

    def report_progress() -> None:
        if on_progress is not None:
            on_progress(
                Progress(
                    done=tally.done,
                    total=total,
                    calls=tally.calls,
                    cache_hits=tally.hits,
                    errors=tally.errors,
                    n429=scorer.stats.n429,
                )
            )

    render = partial(render_prompt, position=position, qa_framing=qa_framing)
    render("", "")  # a bad position or framing fails here, before any pair
    priced = (answered, answered_price) if answered else None
    pairs = _lookups(unique, examples, scorer, graders, accs, tally, render, priced)
    first = next(pairs, None)  # a warm rerun grades every pair here and creates no task
    report_progress()
    stopped = None
    if first is not None:
        stopped = await _drain(
            itertools.chain([first], pairs),
            total - tally.done,
            scorer,
            graders,
            accs,
            tally,
            report_progress,
            workers,
            errors or ErrorPolicy(),
            flow,
        )
        for _ in pairs:  # stopped by the budget: the rest is graded if cached, else skipped
            pass
    # The lookups stream beside the calls, so the split is known once the pairs are done.
    log.info(
        "%s: %d instructions x %d examples: %d pairs, %d from the cache, %d to call",
        scorer.spec,
        len(unique),
        len(examples),
        total,
        tally.hits,
        total - tally.hits,
    )
    report = _report(
        instructions, unique, index, accs, scorer, graders, position, started, len(examples)
    )
    report.stopped = stopped
    report.grading = grading
    await flush_writes(scorer.cache)  # so this report counts the writes that failed
    unreadable, write_errors = _cache_damage(scorer)
    report.totals.cache_unreadable = unreadable - damage_before[0]
    report.totals.cache_write_errors = write_errors - damage_before[1]
    return report


def _cache_damage(scorer: Model) -> tuple[int, int]:
    """(unreadable entries, failed writes) the scorer's cache has met so far."""
    stats = getattr(scorer.cache, "stats", None)  # a user's own cache may keep none
    if not isinstance(stats, CacheStats):
        return 0, 0
    return stats.unreadable, stats.write_errors


def _lookups(
    unique: list[str],
    examples: Sequence[Example],
    scorer: Model,
    graders: _Graders,
    accs: list[_Acc],
    tally: _Tally,
    render: Callable[[str, str], str],
    answered: tuple[dict[str, Generation | ModelCallError | BudgetExceeded], Price | None]
    | None = None,
) -> Iterator[_Pair]:
    """Every pair's prompt rendered, keyed and looked up, a chunk of pairs per cache query:
    hits are graded on the spot, misses yielded for the workers.

    Lazy, so what waits for a call is at most a chunk, never every pending pair's request.
    """
    chunk: list[tuple[int, int, str, str]] = []
    for u, instruction in enumerate(unique):
        for j, example in enumerate(examples):
            prompt = render(instruction, example.input)
            chunk.append((u, j, prompt, scorer.prompt_key(prompt)))
            if len(chunk) == LOOKUP_CHUNK:
                if answered:
                    chunk = _graded_answers(chunk, *answered, graders, accs, tally)
                yield from _graded_hits(chunk, scorer, graders, accs, tally)
                chunk = []
    if answered:
        chunk = _graded_answers(chunk, *answered, graders, accs, tally)
    yield from _graded_hits(chunk, scorer, graders, accs, tally)


def _graded_answers(
    chunk: list[_Pair],
    answered: dict[str, Generation | ModelCallError | BudgetExceeded],
    price: Price | None,
    graders: _Graders,
    accs: list[_Acc],
    tally: _Tally,
) -> list[_Pair]:
    """Grade (or fail) the pairs of `chunk` answered beforehand; return the others. A pair
    the budget refused (`BudgetExceeded`) is skipped, as in a live evaluation."""
    rest: list[_Pair] = []
    for pair in chunk:
        got = answered.get(pair[3])
        if got is None:
            rest.append(pair)
            continue
        if isinstance(got, BudgetExceeded):
            continue
        del answered[pair[3]]
        acc = accs[pair[0]]
        before = tally.track(acc)
        if isinstance(got, ModelCallError):
            acc.fail(got)
        else:
            graders.add(acc, got, pair[1])
            # Its tokens are priced here, at the price they were paid (not the scorer's).
            acc.tokens_in -= got.usage.input_tokens
            acc.tokens_out -= got.usage.output_tokens
            acc.answered_usd += price.cost(got.usage) if price is not None else 0.0
            acc.answered_in += got.usage.input_tokens
            acc.answered_out += got.usage.output_tokens
        tally.update(before, acc)
    return rest


def _graded_hits(
    chunk: list[_Pair], scorer: Model, graders: _Graders, accs: list[_Acc], tally: _Tally
) -> Iterator[_Pair]:
    """Grade the pairs of `chunk` found in the cache; yield the others."""
    found = scorer.lookup_many([pair[3] for pair in chunk])
    hits = 0
    for pair, hit in zip(chunk, found, strict=True):
        if hit is None:
            yield pair
        else:
            graders.add(accs[pair[0]], Generation(hit, cached=True, usage=_NO_USAGE), pair[1])
            hits += 1
    tally.done += hits
    tally.hits += hits


async def _drain(
    queue: Iterator[_Pair],
    at_most: int,
    scorer: Model,
    graders: _Graders,
    accs: list[_Acc],
    tally: _Tally,
    report_progress: Callable[[], None],
    workers: int | None,
    policy: ErrorPolicy,
    flow: Hashable = None,
) -> str | None:
    """Run the cache misses through a bounded pool of workers (not one task per pair).

    `queue` yields the misses (looking up later pairs as it goes); `at_most` bounds their
    number, so a small evaluation starts no more workers than it has pairs.
    """
    stopped: str | None = None
    halted: ConnectionRateLimited | None = None
    failed = finished = 0

    async def worker() -> None:
        nonlocal stopped, halted, failed, finished
        for u, j, prompt, key in queue:
            if stopped is not None or halted is not None:
                return
            acc = accs[u]
            try:
                generation = await scorer.generate(scorer.request(prompt), key=key, flow=flow)
            # What `acc` gains is measured around each change, never across an await:
            # other workers change the same instruction's counts meanwhile.
            except BudgetExceeded as stop:
                before = tally.track(acc)
                acc.refused(stop)
                tally.update(before, acc)
                stopped = "budget"
                return
            except ConnectionRateLimited as exc:
                halted = exc  # let the calls in flight land in the cache, then stop
                return
            except ModelCallError as exc:
                if _aborts(exc):
                    raise EvaluationAborted(str(exc)) from exc
                before = tally.track(acc)
                acc.fail(exc)
                tally.update(before, acc)
                failed += 1
                finished += 1
                verdict = policy.violated(failed, finished)
                if verdict is not None:
                    raise EvaluationAborted(f"{verdict}; last error: {exc}") from exc
            else:
                before = tally.track(acc)
                graders.add(acc, generation, j)
                tally.update(before, acc)
                finished += 1
            report_progress()

    size = workers or max(64, 4 * scorer.limiter.config.max_concurrency)
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(size, at_most)):
                group.create_task(worker())
    except* EvaluationAborted as group_error:
        aborted = group_error.exceptions[0]
        raise aborted from aborted.__cause__  # keep the failed call (a sweep reads its class)
    if halted is not None:
        raise halted
    return stopped


def _report(
    instructions: Sequence[str],
    unique: list[str],
    index: list[int],
    accs: list[_Acc],
    scorer: Model,
    graders: _Graders,
    position: str,
    started: float,
    n_examples: int,
) -> EvalReport:
    first_of: dict[int, int] = {}
    scores: list[InstructionScore] = []
    totals = Totals()
    for i, (ins, u) in enumerate(zip(instructions, index, strict=True)):
        acc = accs[u]
        dup = first_of.setdefault(u, i)
        graded = acc.n - acc.errors
        usage = Usage(acc.tokens_in, acc.tokens_out)
        spend = Spend.of(usage, scorer.cost(usage), acc.calls)
        if acc.answered_in or acc.answered_out or acc.answered_usd:
            spend += Spend(0, acc.answered_in, acc.answered_out, acc.answered_usd)
        scores.append(
            InstructionScore(
                instruction=ins,
                canonical=unique[u],
                duplicate_of=None if dup == i else dup,
                accuracy=acc.correct / graded if graded else None,
                correct=acc.correct,
                n=acc.n,
                errors=acc.errors,
                spend=spend,
                cache_hits=acc.cache_hits,
                skipped=n_examples - acc.n,
                error_messages=list(acc.messages),
                accuracy_reference=(
                    acc.correct_reference / graded if graded and graders.reference else None
                ),
                correct_reference=acc.correct_reference if graders.reference else None,
                truncated=acc.truncated,
                wrong=sorted(acc.wrong),
            )
        )
        if dup == i:  # totals count each canonical instruction once
            totals.pairs += acc.n
            totals.spend += spend
            totals.cache_hits += acc.cache_hits
            totals.errors += acc.errors
            totals.n429 += acc.n429
            totals.skipped += n_examples - acc.n
    totals.wall_s = time.perf_counter() - started
    return EvalReport(
        scorer=scorer.spec,
        position=position,
        grader_version=graders.main.version,
        instructions=scores,
        totals=totals,
        reference_grader_version=graders.reference.version if graders.reference else None,
    )
