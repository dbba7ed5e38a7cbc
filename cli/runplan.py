"""The one-line plan shown before a long run: pairs, calls still to make, cost and time.

The counts and cost come from `engine/plan.py` (evaluate) and `optimize/plan.py` (optimize,
upper bounds). The time needs the scorer's speed: a server's `--rpm`/`--tpm` limits give it
before the first call (`speed_from_limits`); otherwise (the in-process local model, or a
server with no stated limit) it is measured over the first calls (`cli/progress.py`), and
the line is shown then. A run is "long" when it will take at least `LONG_RUN_S`; past
`HINT_S` the line says how to shorten it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from opro.engine.plan import Plan

LONG_RUN_S = 60.0  # shorter runs start without a plan line
HINT_S = 180.0  # "more than a few minutes": say how to shorten the run


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What a run will do, for the plan line; `optimizer_calls` only for optimize."""

    scorer: Plan
    upper_bound: bool = False  # optimize plans assume every candidate is new
    optimizer_calls: int = 0
    optimizer_cost_usd: float | None = 0.0
    shorten: str = "--limit"  # the options that shorten this kind of run
    cached_at_start: bool = False  # the cache hits come from the run's first snapshot

    @property
    def calls(self) -> int:
        return self.scorer.calls

    @property
    def est_cost_usd(self) -> float | None:
        if self.scorer.est_cost_usd is None or self.optimizer_cost_usd is None:
            return None
        return self.scorer.est_cost_usd + self.optimizer_cost_usd

    def with_cached(self, cached: int) -> RunPlan:
        """The plan once the run found `cached` of its pairs in the cache (tokens and cost
        scale with the calls left to make)."""
        p = self.scorer
        calls = max(0, p.pairs - cached)
        f = calls / p.pairs if p.pairs else 0.0
        scaled = Plan(
            pairs=p.pairs,
            cached=p.pairs - calls,
            calls=calls,
            est_tokens_in=int(p.est_tokens_in * f),
            max_tokens_out=int(p.max_tokens_out * f),
            est_cost_usd=None if p.est_cost_usd is None else p.est_cost_usd * f,
            worst_cost_usd=None if p.worst_cost_usd is None else p.worst_cost_usd * f,
        )
        return replace(self, scorer=scaled, cached_at_start=False)


def speed_from_limits(plan: Plan, rpm: float | None, tpm: float | None) -> float | None:
    """Calls per second the scorer's connection limits allow at most, or None if unlimited."""
    speeds = []
    if rpm is not None:
        speeds.append(rpm / 60.0)
    if tpm is not None and plan.calls:
        per_call = (plan.est_tokens_in + plan.max_tokens_out) / plan.calls
        if per_call > 0:
            speeds.append(tpm / 60.0 / per_call)
    return min(speeds) if speeds else None


def duration(seconds: float) -> str:
    """`45s`, `3m05s`, `2h10m`: short enough for a status line."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def usd(value: float | None) -> str:
    return "unknown (no price)" if value is None else f"${value:.4f}"


def plan_line(plan: RunPlan, speed: float, *, measured: bool) -> str:
    """The plan as one line, with the time at `speed` scorer calls per second."""
    p = plan.scorer
    cached = f"{p.cached:,} cached" if p.cache_checked else "cache not checked"
    head = "plan (at most): " if plan.upper_bound else "plan: "
    what = f"{p.pairs:,} pairs, {p.calls:,} calls to make ({cached})"
    if plan.optimizer_calls:
        what += f" + {plan.optimizer_calls:,} optimizer answers"
    seconds = p.calls / speed
    how = "measured" if measured else "the --rpm/--tpm limit"
    line = (
        f"{head}{what}; estimated cost {usd(plan.est_cost_usd)}; about {duration(seconds)} "
        f"of scorer calls at {speed:.3g} calls/s ({how})"
    )
    if seconds >= HINT_S:
        line += f"; use {plan.shorten} to shorten"
    return line


def dry_run_time(plan: RunPlan, speed: float | None) -> str:
    """The time line of `--dry-run`, which never measures anything."""
    if plan.calls == 0:
        return "time: nothing to call"
    if speed is None:
        return (
            "time: not known before the first calls (no --rpm/--tpm); the run measures the "
            "scorer's speed after a few calls and prints the estimate"
        )
    seconds = plan.calls / speed
    hint = f"; use {plan.shorten} to shorten" if seconds >= HINT_S else ""
    return (
        f"time: about {duration(seconds)} of scorer calls at {speed:.3g} calls/s "
        f"(the --rpm/--tpm limit){hint}"
    )
