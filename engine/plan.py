"""What an evaluation would cost, computed before anything is spent (`--dry-run`).

It renders every (canonical instruction, example) prompt exactly as `evaluate` would and
checks the cache for it, so the count of calls is exact; tokens come from `engine.tokens`
(the expected count, and `max_tokens` as the ceiling of each answer), and cost is shown both
as that estimate and as the budget's worst case (the same bound the budget reserves).

`plan_model` builds the scorer or optimizer a plan needs without a key, a server or model
weights (`providers.offline`): a plan must work before any of them is set up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opro.caches.base import ResultCache
from opro.engine.budget import Budget
from opro.engine.dedup import dedupe
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Decoding, Model, Price
from opro.engine.pool import pool_identity, pool_key, pool_urls
from opro.engine.prices import known_price
from opro.engine.retry import RetryPolicy
from opro.engine.tokens import expected_usage, worst_case_usage
from opro.providers.base import Provider
from opro.providers.errors import ConfigurationError
from opro.providers.offline import OfflineProvider, offline_provider
from opro.tasks.prompts import Position, render_prompt
from opro.tasks.types import Example


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

    def describe(self) -> str:
        def usd(x: float | None) -> str:
            return "unknown (no price)" if x is None else f"${x:.4f}"

        cached = f"{self.cached} cached" if self.cache_checked else "cache not checked"
        return (
            f"{self.pairs} pairs: {cached}, {self.calls} calls to make; "
            f"~{self.est_tokens_in} input tokens + at most {self.max_tokens_out} output tokens; "
            f"estimated cost {usd(self.est_cost_usd)}, at most {usd(self.worst_cost_usd)}"
        )


def plan_evaluation(
    instructions: Sequence[str],
    examples: Sequence[Example],
    scorer: Model,
    *,
    position: Position = "Q_begin",
    qa_framing: bool | None = None,
    check_cache: bool = True,
) -> Plan:
    """Pairs, calls, tokens and cost of an evaluation; `check_cache` False counts every pair
    as a call (for a caller that learns the cache hits from the evaluation itself)."""
    unique, _ = dedupe(instructions)
    plan = Plan(cache_checked=check_cache and identity_known(scorer))
    cache = scorer.cache if plan.cache_checked else None
    for canon in unique:
        for ex in examples:
            request = scorer.request(
                render_prompt(canon, ex.input, position, qa_framing=qa_framing)
            )
            plan.pairs += 1
            if cache is not None and cache.get(scorer.key(request)) is not None:
                plan.cached += 1
                continue
            plan.calls += 1
            expected, worst = expected_usage(request), worst_case_usage(request)
            plan.est_tokens_in += expected.input_tokens
            plan.max_tokens_out += worst.output_tokens
            plan.worst_tokens_in += worst.input_tokens
    price_plan(plan, scorer)
    return plan


def price_plan(plan: Plan, model: Model) -> None:
    """Fill in a plan's estimated and worst-case cost from the model's price."""
    if model.price is None:
        plan.est_cost_usd = plan.worst_cost_usd = None
        return
    plan.est_cost_usd = model.price.cost_of(plan.est_tokens_in, plan.max_tokens_out)
    plan.worst_cost_usd = model.price.cost_of(plan.worst_tokens_in, plan.max_tokens_out)


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
