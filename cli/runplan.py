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

from opro.engine.model import Model
from opro.engine.plan import Plan, cost_of
from opro.engine.spend import Spend

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
    optimizer: Plan | None = None  # the optimizer's plan, for its range and worst case

    @property
    def calls(self) -> int:
        return self.scorer.calls

    @property
    def est_cost_usd(self) -> float | None:
        if self.scorer.est_cost_usd is None or self.optimizer_cost_usd is None:
            return None
        return self.scorer.est_cost_usd + self.optimizer_cost_usd

    def _total(self, name: str) -> float | None:
        plans = [self.scorer] if self.optimizer is None else [self.scorer, self.optimizer]
        values = [getattr(p, name) for p in plans]
        return None if any(v is None for v in values) else sum(values)

    def cost_text(self) -> str:
        """`expected cost $X ($L-$H); worst case $W`, the two numbers a plan line shows."""
        low, high = self._total("est_cost_low"), self._total("est_cost_high")
        est, worst = self.est_cost_usd, self._total("worst_cost_usd")
        text = f"expected cost {usd(est)}"
        if est is not None and low is not None and high is not None and low <= est < high:
            text += f" ({usd(low)}-{usd(high)})"
        if worst != 0.0:  # a plan with calls and a price always has one
            text += f"; worst case {usd(worst)}"
        return text

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
            est_tokens_out=p.est_tokens_out * f,
            est_out_low=p.est_out_low * f,
            est_out_high=p.est_out_high * f,
            est_cost_low=None if p.est_cost_low is None else p.est_cost_low * f,
            est_cost_high=None if p.est_cost_high is None else p.est_cost_high * f,
            output_source=p.output_source,
            tokenizer=p.tokenizer,
            exact_input=p.exact_input,
            per_call=p.per_call,
            calibration=p.calibration,
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
        f"{head}{what}; {plan.cost_text()}; about {duration(seconds)} "
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


def bill_line(label: str, expected: Spend, billed: Spend, worst_usd: float | None) -> str:
    """Plan vs bill at the end of a run: what was expected for the calls made, what the
    server billed, and the worst case the budget could have reserved for them."""
    diff = ""
    if expected.cost_usd > 0:
        diff = f", {100 * (billed.cost_usd - expected.cost_usd) / expected.cost_usd:+.0f}%"
    elif expected.tokens > 0:
        diff = f", {100 * (billed.tokens - expected.tokens) / expected.tokens:+.0f}% tokens"
    return (
        f"{label}: expected {usd(expected.cost_usd)} for {billed.calls:,} calls "
        f"({expected.tokens_in:,} + {expected.tokens_out:,} tokens); billed "
        f"{usd(billed.cost_usd)} ({billed.tokens_in:,} + {billed.tokens_out:,} tokens{diff}); "
        f"worst case {usd(worst_usd)}"
    )


def per_call_spend(plan: Plan, model: Model) -> Spend | None:
    """What one planned call is expected to cost (None: nothing planned)."""
    if not plan.calls:
        return None
    tin = plan.est_tokens_in / plan.calls
    tout = plan.est_tokens_out / plan.calls
    return Spend(1, round(tin), round(tout), cost_of(model, tin, tout))


def scaled_bill(label: str, plan: Plan, billed: Spend, model: Model) -> str:
    """Plan vs bill when the plan's call count is an upper bound (optimize): the expected
    and worst cost of the calls really made, at the plan's cost per call."""
    calls, planned = billed.calls, plan.requests or plan.calls
    f = calls / planned if planned else 0.0
    tin, tout = plan.est_tokens_in * f, plan.est_tokens_out * f
    expected = Spend(calls, round(tin), round(tout), cost_of(model, tin, tout))
    worst = None if plan.worst_cost_usd is None else plan.worst_cost_usd * f
    return f"{bill_line(label, expected, billed, worst)}; output expected from {plan.output_source}"


def plan_vs_bill(*rows: tuple[str, Plan, Spend, Model]) -> list[str]:
    """One `scaled_bill` line per (label, plan, billed, model) that made calls."""
    return [scaled_bill(label, p, billed, m) for label, p, billed, m in rows if billed.calls]
