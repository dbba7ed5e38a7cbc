"""Expected output tokens per answer, from evidence, for plans that are not 5x the bill.

A plan's worst case counts every answer at `max_tokens` (that is what the budget reserves,
and it stays so). The expected cost needs what answers really cost, taken from the best
evidence there is, in this order, and always labelled with where it came from:

1. answers already in the result cache for the same scorer and task: the plan looks up the
   pairs it plans anyway, so the cached ones are free evidence (their billed output tokens)
   for the uncached ones of the same instruction, or, failing that, of the other planned
   instructions of the same answer format;
2. a calibration sample (`--calibrate N`): N pairs paid for first, spread over the
   instructions; their answers are cached, so they are evidence of kind 1 that the run then
   reuses instead of paying again (`calibration_requests` picks them);
3. a stated default per answer format (`default_output`): short answers or chain of
   thought, decided from the instruction, the task's answer type and `max_tokens`.

`OutputEstimate.total(calls)` gives the expected total and a range: about two standard
errors of a sum of `calls` answers whose mean is itself estimated from `n` answers, and
never outside [1, max_tokens] per answer.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from opro.providers.types import Completion

# Answers of one instruction needed before its own mean is trusted over the pooled one.
MIN_EVIDENCE = 3
Z = 2.0  # about a 95% interval
# Cues that an instruction asks for reasoning before the answer.
_COT = re.compile(
    r"step[- ]by[- ]step|think|reason|explain|show (your|the) work|work (it )?out|"
    r"carefully|let'?s solve|break (it|this) down",
    re.IGNORECASE,
)
# Stated defaults, in output tokens per answer: (mean, low, high) before the max_tokens cap.
SHORT_DEFAULT = (8.0, 1.0, 64.0)
COT_DEFAULT = (200.0, 40.0, 1024.0)
OPTIMIZER_DEFAULT = (120.0, 20.0, 512.0)  # an optimizer's answer: one or two instructions
# Answer types whose questions models tend to work out in writing even unasked.
_WORKED = frozenset({"number", "free"})


@dataclass(frozen=True, slots=True)
class OutputStats:
    """Count, sum and sum of squares of answers' output tokens (mergeable with `+`)."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, tokens: float) -> OutputStats:
        return OutputStats(self.n + 1, self.total + tokens, self.total_sq + tokens * tokens)

    def __add__(self, other: OutputStats) -> OutputStats:
        return OutputStats(
            self.n + other.n, self.total + other.total, self.total_sq + other.total_sq
        )

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def sd(self) -> float:
        if self.n < 2:
            return 0.0
        var = (self.total_sq - self.total * self.total / self.n) / (self.n - 1)
        return math.sqrt(max(0.0, var))


def answer_tokens(completion: Completion) -> float:
    """The output tokens one answer of a cached completion was billed for."""
    return completion.usage.output_tokens / max(1, len(completion.texts))


@dataclass(frozen=True, slots=True)
class OutputEstimate:
    """Expected output tokens of one answer, with its spread and where it came from.

    `n` answers stand behind it (0 for a stated default, whose `low`/`high` are the
    stated range per answer); `source` is "cache", "calibration" or "default".
    """

    mean: float
    sd: float
    n: int
    source: str
    detail: str
    ceiling: int
    low: float = 1.0
    high: float = 0.0

    def total(self, calls: int) -> tuple[float, float, float]:
        """Expected output tokens of `calls` answers, and the low and high end of the range."""
        if calls <= 0:
            return 0.0, 0.0, 0.0
        cap = float(self.ceiling)
        expected = calls * min(cap, max(1.0, self.mean))
        if self.n == 0:  # a stated default: its own range
            low, high = calls * min(cap, self.low), calls * min(cap, self.high)
        else:
            # A small sample understates the spread; allow at least 10% of the mean.
            sd = max(self.sd, 0.1 * self.mean, 1.0)
            err = Z * math.sqrt(calls * calls * sd * sd / self.n + calls * sd * sd)
            low, high = expected - err, expected + err
        low = max(float(calls), min(low, expected))
        high = min(calls * cap, max(high, expected))
        return expected, low, high

    def label(self) -> str:
        return f"{self.source}: {self.detail}"


def from_stats(stats: OutputStats, ceiling: int, source: str, detail: str) -> OutputEstimate:
    return OutputEstimate(stats.mean, stats.sd, stats.n, source, detail, ceiling)


def answer_format(instruction: str, answer_type: str, max_tokens: int) -> str:
    """ "chain of thought" or "short answer", from what the instruction asks, what the task's
    answers are and how long an answer may be."""
    if max_tokens <= 32:
        return "short answer"
    if _COT.search(instruction):
        return "chain of thought"
    return "chain of thought" if answer_type in _WORKED else "short answer"


def default_output(instruction: str, answer_type: str, max_tokens: int) -> OutputEstimate:
    """The stated default for an answer format, when no answer is known yet."""
    kind = answer_format(instruction, answer_type, max_tokens)
    mean, low, high = COT_DEFAULT if kind == "chain of thought" else SHORT_DEFAULT
    why = "a reasoning cue in the instruction" if _COT.search(instruction) else answer_type
    if max_tokens <= 32:
        why = f"max_tokens {max_tokens}"
    return OutputEstimate(
        min(mean, max_tokens),
        0.0,
        0,
        "default",
        f"{kind} ({why}), ~{min(mean, max_tokens):g} tokens an answer",
        max_tokens,
        low=min(low, max_tokens),
        high=min(high, max_tokens),
    )


def optimizer_default(max_tokens: int) -> OutputEstimate:
    mean, low, high = OPTIMIZER_DEFAULT
    return OutputEstimate(
        min(mean, max_tokens),
        0.0,
        0,
        "default",
        f"optimizer answer, ~{min(mean, max_tokens):g} tokens",
        max_tokens,
        low=min(low, max_tokens),
        high=min(high, max_tokens),
    )


def choose(
    own: OutputStats,
    own_calibrated: int,
    pooled: OutputStats,
    pooled_calibrated: int,
    default: OutputEstimate,
) -> OutputEstimate:
    """The estimate for one instruction: its own answers, else those of the other planned
    instructions of its format, else the stated default."""
    ceiling = default.ceiling
    if own.n >= MIN_EVIDENCE:
        source = "calibration" if own_calibrated == own.n else "cache"
        return from_stats(own, ceiling, source, f"{own.n} answers of the same instruction")
    if pooled.n >= MIN_EVIDENCE:
        source = "calibration" if pooled_calibrated == pooled.n else "cache"
        detail = f"{pooled.n} answers of instructions of the same format"
        return from_stats(pooled, ceiling, source, detail)
    return default


def calibration_picks(
    instructions: int, examples: int, n: int, seed: int, taken: set[tuple[int, int]]
) -> list[tuple[int, int]]:
    """`n` (instruction, example) index pairs not in `taken`, round-robin over the
    instructions, examples in a seeded random order: a sample of every instruction."""
    rng = random.Random(seed)
    orders = [rng.sample(range(examples), examples) for _ in range(instructions)]
    picks: list[tuple[int, int]] = []
    cursors = [0] * instructions
    while len(picks) < n:
        progressed = False
        for i in range(instructions):
            order = orders[i]
            while cursors[i] < examples and (i, order[cursors[i]]) in taken:
                cursors[i] += 1
            if cursors[i] < examples and len(picks) < n:
                picks.append((i, order[cursors[i]]))
                cursors[i] += 1
                progressed = True
        if not progressed:
            break
    return picks


def merge_sources(labels: Sequence[str]) -> str:
    """The distinct evidence labels of a plan, most common first."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    ordered = sorted(counts, key=lambda k: -counts[k])
    return "; ".join(ordered[:3]) + (f"; +{len(ordered) - 3} more" if len(ordered) > 3 else "")
