"""What an evaluation would cost, computed before anything is spent (`--dry-run`).

It renders every (canonical instruction, example) prompt exactly as `evaluate` would and
checks the cache for it, so the count of calls is exact. Input tokens are counted by the
vendor's tokenizer when it is available offline (`engine.vendor_tokens`), else estimated
(`engine.tokens`); output tokens are expected from evidence (`engine.estimate`: the cached
answers the plan finds, a calibration sample, or a stated default, labelled). Cost is shown
as that expectation with a range, and separately as the budget's worst case (every answer at
`max_tokens`: the same bound the budget reserves).

`plan_model` builds the scorer or optimizer a plan needs without a key, a server or model
weights (`providers.offline`): a plan must work before any of them is set up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from opro.caches.base import ResultCache
from opro.engine.budget import Budget
from opro.engine.dedup import dedupe
from opro.engine.estimate import (
    OutputEstimate,
    OutputStats,
    answer_format,
    answer_tokens,
    choose,
    default_output,
    merge_sources,
)
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Decoding, Model, Price
from opro.engine.pool import pool_identity, pool_key, pool_urls
from opro.engine.prices import known_price
from opro.engine.retry import RetryPolicy
from opro.engine.spend import Spend
from opro.engine.tokens import expected_usage, worst_case_usage
from opro.engine.vendor_tokens import TokenCounter, counter_for
from opro.providers.base import Provider
from opro.providers.errors import ConfigurationError
from opro.providers.offline import OfflineProvider, offline_provider
from opro.providers.types import Completion
from opro.tasks.grading import answer_type
from opro.tasks.prompts import Position, render_prompt
from opro.tasks.types import Example

# Pairs of each instruction looked up as evidence when the cache hits are not counted.
EVIDENCE_SAMPLE = 64
INPUT_SPREAD = 0.10  # the byte estimate's range of the input tokens


@dataclass(slots=True)
class Plan:
    pairs: int = 0
    cached: int = 0
    calls: int = 0
    est_tokens_in: int = 0
    max_tokens_out: int = 0
    worst_tokens_in: int = 0  # the budget's bound of the input tokens
    est_cost_usd: float | None = 0.0
    worst_cost_usd: float | None = 0.0
    cache_checked: bool = True  # False: the model's identity was unknown, every pair counted
    # Expected output tokens of the calls to make (`engine.estimate`), with a range.
    est_tokens_out: float = 0.0
    est_out_low: float = 0.0
    est_out_high: float = 0.0
    est_cost_low: float | None = 0.0
    est_cost_high: float | None = 0.0
    output_source: str = ""  # where the expected output came from (cache, calibration, ...)
    tokenizer: str = ""  # what counted the input tokens
    exact_input: bool = False
    # Per instruction planned: (input, output) tokens expected per call, for plan vs bill.
    per_call: dict[str, tuple[float, float]] = field(default_factory=dict)
    evidence: OutputStats = field(default_factory=OutputStats)  # every cached answer the plan saw
    evidence_calibrated: int = 0  # of which from this run's calibration sample
    answer_type: str = "free"
    calibration: Spend | None = None  # paid before the plan (`--calibrate`)
    requests: int = 0  # requests the calls make when one carries several answers (0: calls)

    def describe(self) -> str:
        cached = f"{self.cached} cached" if self.cache_checked else "cache not checked"
        line = (
            f"{self.pairs} pairs: {cached}, {self.calls} calls to make; "
            f"~{self.est_tokens_in} input tokens ({self.tokenizer or 'estimated'}) + "
            f"~{self.est_tokens_out:.0f} output tokens expected "
            f"({self.est_out_low:.0f}-{self.est_out_high:.0f}; "
            f"{self.output_source or 'nothing to call'}); "
            f"expected cost {cost_range(self)}; worst case {usd(self.worst_cost_usd)} "
            f"(at most {self.max_tokens_out} output tokens: what the budget reserves)"
        )
        if self.calibration is not None:
            line += (
                f"; calibration: {self.calibration.calls} calls paid "
                f"{usd(self.calibration.cost_usd)} before (cached, reused by the run)"
            )
        return line

    def expected_for(self, calls: dict[str, int]) -> tuple[float, float]:
        """Expected (input, output) tokens of the calls made, `calls` per instruction."""
        tin = tout = 0.0
        for canon, n in calls.items():
            per_in, per_out = self.per_call.get(canon, (0.0, 0.0))
            tin += n * per_in
            tout += n * per_out
        return tin, tout


def usd(x: float | None) -> str:
    return "unknown (no price)" if x is None else f"${x:.4f}"


def cost_range(plan: Plan) -> str:
    """`$0.0067 ($0.0059-$0.0076)`: the expected cost and its range."""
    if plan.est_cost_usd is None:
        return usd(None)
    if plan.est_cost_low is None or plan.est_cost_high is None:
        return usd(plan.est_cost_usd)
    return f"{usd(plan.est_cost_usd)} ({usd(plan.est_cost_low)}-{usd(plan.est_cost_high)})"


def token_counter(model: Model) -> TokenCounter:
    """The most exact offline counter of `model`'s prompt tokens (`engine.vendor_tokens`)."""
    provider = model.provider
    api = getattr(provider, "api", None)
    if api is None and identity_known(model):  # a plan's stand-in keeps it in its identity
        api = provider.cache_identity().get("api")
    return counter_for(provider.name, provider.model, api if isinstance(api, str) else None)


def task_answer_type(examples: Sequence[Example]) -> str:
    """The task's answer type, from its first example (all of a task's share one)."""
    if not examples:
        return "free"
    return answer_type(examples[0].target, examples[0].input)


def plan_evaluation(
    instructions: Sequence[str],
    examples: Sequence[Example],
    scorer: Model,
    *,
    position: Position = "Q_begin",
    qa_framing: bool | None = None,
    check_cache: bool = True,
    calibrated: frozenset[str] = frozenset(),
) -> Plan:
    """Pairs, calls, tokens and cost of an evaluation; `check_cache` False counts every pair
    as a call (for a caller that learns the cache hits from the evaluation itself), and then
    looks up only a sample of each instruction's pairs, as evidence of answer lengths.
    `calibrated` are the cache keys a calibration sample paid for (labelled as such)."""
    unique, _ = dedupe(instructions)
    plan = Plan(cache_checked=check_cache and identity_known(scorer))
    plan.answer_type = task_answer_type(examples)
    counter = token_counter(scorer)
    plan.tokenizer, plan.exact_input = counter.name, counter.exact
    cache = scorer.cache if identity_known(scorer) else None
    rows: list[tuple[str, int, int, OutputStats, int]] = []
    for canon in unique:
        requests = [
            scorer.request(render_prompt(canon, ex.input, position, qa_framing=qa_framing))
            for ex in examples
        ]
        keys = [scorer.key(r) for r in requests] if cache is not None else []
        looked = [
            i
            for i, key in enumerate(keys)
            if plan.cache_checked or i < EVIDENCE_SAMPLE or key in calibrated
        ]
        found: dict[int, Completion | None] = {}
        if cache is not None and looked:
            hits = _get_many(cache, [keys[i] for i in looked])
            found = dict(zip(looked, hits, strict=True))
        own, own_cal = OutputStats(), 0
        calls = tokens_in = 0
        for i, request in enumerate(requests):
            plan.pairs += 1
            hit = found.get(i)
            if hit is not None:
                own = own.add(answer_tokens(hit))
                own_cal += keys[i] in calibrated
                if plan.cache_checked:
                    plan.cached += 1
                    continue
            calls += 1
            worst = worst_case_usage(request)
            tokens_in += (
                counter.count(request.as_text())
                if counter.exact
                else expected_usage(request).input_tokens
            )
            plan.max_tokens_out += worst.output_tokens
            plan.worst_tokens_in += worst.input_tokens
        plan.calls += calls
        plan.est_tokens_in += tokens_in
        plan.evidence += own
        plan.evidence_calibrated += own_cal
        rows.append((canon, calls, tokens_in, own, own_cal))
    _expect_outputs(plan, rows, scorer.decoding.max_tokens)
    price_plan(plan, scorer)
    return plan


def _get_many(cache: ResultCache, keys: list[str]) -> list[Completion | None]:
    get_many = getattr(cache, "get_many", None)  # a user's cache may predate get_many
    return list(get_many(keys)) if get_many is not None else [cache.get(k) for k in keys]


def _expect_outputs(
    plan: Plan, rows: list[tuple[str, int, int, OutputStats, int]], max_tokens: int
) -> None:
    """Each instruction's expected output from its evidence (`estimate.choose`)."""
    kinds = [answer_format(canon, plan.answer_type, max_tokens) for canon, *_ in rows]
    labels: list[str] = []
    for (canon, calls, tokens_in, own, own_cal), kind in zip(rows, kinds, strict=True):
        pooled, pooled_cal = OutputStats(), 0
        for (other, _, _, stats, cal), other_kind in zip(rows, kinds, strict=True):
            if other != canon and other_kind == kind:
                pooled, pooled_cal = pooled + stats, pooled_cal + cal
        default = default_output(canon, plan.answer_type, max_tokens)
        est = choose(own, own_cal, pooled, pooled_cal, default)
        add_output(plan, est, calls)
        plan.per_call[canon] = (tokens_in / max(1, calls), est.total(1)[0])
        if calls:
            labels.append(est.label())
    plan.output_source = merge_sources(labels)


def add_output(plan: Plan, est: OutputEstimate, calls: int) -> None:
    """Add `calls` answers of estimate `est` to the plan's expected output tokens."""
    mean, low, high = est.total(calls)
    plan.est_tokens_out += mean
    plan.est_out_low += low
    plan.est_out_high += high


def price_plan(plan: Plan, model: Model) -> None:
    """Fill in a plan's expected (with its range) and worst-case cost from the model's price.

    The input range is the count itself with a vendor tokenizer, else +-10% around the
    byte estimate."""
    price = model.price
    if price is None:
        plan.est_cost_usd = plan.worst_cost_usd = None
        plan.est_cost_low = plan.est_cost_high = None
        return
    spread = 0.0 if plan.exact_input else INPUT_SPREAD
    tin = plan.est_tokens_in
    plan.est_cost_usd = _cost(price, tin, plan.est_tokens_out)
    plan.est_cost_low = _cost(price, tin * (1 - spread), plan.est_out_low)
    plan.est_cost_high = _cost(price, tin * (1 + spread), plan.est_out_high)
    plan.worst_cost_usd = price.cost_of(plan.worst_tokens_in, plan.max_tokens_out)


def cost_of(model: Model, tokens_in: float, tokens_out: float) -> float:
    """What `tokens_in` + `tokens_out` (expected, so fractional) cost at `model`'s price."""
    return 0.0 if model.price is None else _cost(model.price, tokens_in, tokens_out)


def _cost(price: Price, tokens_in: float, tokens_out: float) -> float:
    return (tokens_in * price.input_per_m + tokens_out * price.output_per_m) / 1e6


def identity_known(model: Model) -> bool:
    """Whether the model's cache keys are those a real run uses (see `plan_model`)."""
    provider = model.provider
    return not isinstance(provider, OfflineProvider) or provider.identity_known


def _offline(spec: str, base_url: str | Sequence[str] | None, api: str | None) -> Provider:
    """`offline_provider`, for a pool of URLs too: each URL is checked as a run checks it,
    and the keys are the pool's (`engine.pool.pool_identity`)."""
    urls = pool_urls(base_url)
    if len(urls) <= 1:
        return offline_provider(spec, base_url=urls[0] if urls else None, api=api)
    parts = [offline_provider(spec, base_url=url, api=api) for url in urls]
    if parts[0].name in ("local", "simulated"):  # as `engine.pool.PoolProvider` refuses
        raise ConfigurationError(
            f"{spec} runs in this process: a list of base URLs (a pool) is only for models "
            "served over HTTP"
        )
    return OfflineProvider(
        parts[0].name, parts[0].model, identity=pool_identity(parts), connection=pool_key(parts)
    )


def plan_model(
    spec: str,
    *,
    cache: ResultCache | None,
    decoding: Decoding,
    base_url: str | Sequence[str] | None = None,
    api: str | None = None,
    price: Price | None = None,
    budget: Budget | None = None,
) -> Model:
    """A `Model` that can render requests, key them and look them up, but never call.

    Its cache keys are the real model's (`providers.offline`), so a plan's cache hits are the
    ones the run will have. Like `Engine.model`, a USD budget on a model with no known price
    is refused: the run would refuse it too.
    """
    provider = _offline(spec, base_url, api)
    price = price if price is not None else known_price(provider.spec)
    if price is None and budget is not None and budget.max_usd is not None:
        raise ConfigurationError(
            f"no known price for {provider.spec}, so a USD budget cannot bound it: "
            "give its price with --price IN,OUT (--optimizer-price for the optimizer; "
            "USD per million tokens)"
        )
    return Model(
        provider,
        limiter=ConnectionLimiter(LimitConfig(), name=provider.spec),
        retry=RetryPolicy(),
        cache=cache,
        decoding=decoding,
        price=price,
        budget=budget,
    )
