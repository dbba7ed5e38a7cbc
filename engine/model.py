"""`Model`: the only caller of providers. Cache -> single-flight -> limits -> retry.

Every request of the engine, scorer or optimizer, goes through `Model.generate()`:

1. the result cache is read (a hit makes no call);
2. an identical request already in flight is joined instead of sent again;
3. the run's budget is checked (a call that could not fit raises `BudgetExceeded`);
4. a slot of the connection's limiter is taken (concurrency, rpm, tpm, 429 cooldown), and
   inside it the call's worst-case cost is reserved, then settled with the real usage (a
   pool of replicas, `engine.pool`, is such a limiter: its slot names the replica to call);
5. the provider is called; a classified failure is retried as `RetryPolicy` says;
6. a success is written to the cache; a final failure raises `ModelCallError` and is
   never written anywhere, so an outage can never become a stored wrong answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from opro.caches.base import ResultCache
from opro.caches.keys import PromptKeys, request_key
from opro.checks import MAX_TOKENS, PRICE_PER_M, SEED, TEMPERATURE
from opro.engine.budget import Budget, BudgetExceeded, Reservation
from opro.engine.limits import ConnectionLimiter
from opro.engine.retry import RetryPolicy
from opro.engine.singleflight import SingleFlight
from opro.engine.spend import NOTHING, Spend, SpendFields
from opro.engine.tokens import expected_usage, worst_case_usage
from opro.errors import OproError, SettingsError
from opro.providers.base import Provider
from opro.providers.errors import ProviderError, RateLimitError, TransientError
from opro.providers.types import Completion, Request, Usage

log = logging.getLogger("opro.model")


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million input and output tokens."""

    input_per_m: float = 0.0
    output_per_m: float = 0.0

    def __post_init__(self) -> None:
        # A NaN price makes every cost NaN, and NaN never exceeds a budget: the cap is gone.
        PRICE_PER_M.check("price per million input tokens (USD)", self.input_per_m)
        PRICE_PER_M.check("price per million output tokens (USD)", self.output_per_m)

    def cost(self, usage: Usage) -> float:
        return self.cost_of(usage.input_tokens, usage.output_tokens)

    def cost_of(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_per_m + tokens_out * self.output_per_m) / 1e6


@dataclass(frozen=True, slots=True)
class Decoding:
    """Default decoding parameters of the requests a `Model` builds."""

    temperature: float = 0.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        TEMPERATURE.check("temperature", self.temperature)
        MAX_TOKENS.check("max tokens", self.max_tokens)
        # A tuple or a list (argparse's) of strings, kept as a hashable tuple.
        stop: object = self.stop
        if not isinstance(stop, tuple | list) or not all(isinstance(s, str) for s in stop):
            raise SettingsError(f"stop must be a tuple of strings, got {stop!r}")
        object.__setattr__(self, "stop", tuple(stop))
        if self.seed is not None:
            SEED.check("seed", self.seed)


@dataclass(frozen=True, slots=True)
class Generation:
    """A completion plus what obtaining it cost this caller.

    `calls` counts every attempt sent and `usage` every token charged for them, failed
    attempts that may have been billed included. `calls`, `n429` and `usage` are zero for
    cache hits and for callers that joined an identical in-flight request: they paid
    nothing.
    """

    completion: Completion
    cached: bool = False
    shared: bool = False
    calls: int = 0
    n429: int = 0
    usage: Usage = field(default_factory=Usage)


class ModelCallError(OproError):
    """A call that failed for good: fatal, or retryable but out of attempts.

    `paid` is what its attempts were charged (a failure without a status may have been
    billed), so reports count failed calls at what they cost.
    """

    def __init__(
        self, error: ProviderError, *, attempts: int, n429: int, paid: Spend = NOTHING
    ) -> None:
        super().__init__(f"{error.message} (after {attempts} attempt{'s' * (attempts != 1)})")
        self.error = error
        self.attempts = attempts
        self.n429 = n429
        self.paid = paid


@dataclass(slots=True)
class ModelStats(SpendFields):
    """Live counters, read by progress displays while calls are still running.

    `spend` is what every attempt was charged, counted as each one ends (the same charge
    the budget settles); the other counters are events, not spend.
    """

    spend: Spend = NOTHING
    n429: int = 0
    retries: int = 0
    failures: int = 0
    cache_hits: int = 0
    shared: int = 0
    unknown_usage: int = 0  # answers whose usage report was unusable: charged the worst case


class Model:
    """A provider wrapped with the engine's cache, single-flight, limits and retries."""

    def __init__(
        self,
        provider: Provider,
        *,
        limiter: ConnectionLimiter,
        retry: RetryPolicy,
        cache: ResultCache | None,
        inflight: SingleFlight[str, Generation] | None = None,
        decoding: Decoding = Decoding(),
        price: Price | None = None,
        rng: random.Random | None = None,
        budget: Budget | None = None,
        priority: int = 1,
    ) -> None:
        self.provider = provider
        self.limiter = limiter
        self.retry = retry
        self.cache = cache
        self.decoding = decoding
        self.price = price
        self.budget = budget
        self.priority = priority
        self.stats = ModelStats()
        self._inflight: SingleFlight[str, Generation] = (
            inflight if inflight is not None else SingleFlight()
        )
        # Resolved by `prepare()` (off the loop) or, failing that, by the first `key()`.
        self._identity: dict[str, Any] | None = None
        self._prompt_keys: tuple[Decoding, PromptKeys] | None = None
        self._rng = rng or random.Random()

    @property
    def spec(self) -> str:
        return self.provider.spec

    def request(self, prompt: str) -> Request:
        d = self.decoding
        return Request(
            prompt=prompt,
            temperature=d.temperature,
            max_tokens=d.max_tokens,
            stop=d.stop,
            seed=d.seed,
        )

    def cost(self, usage: Usage) -> float:
        return self.price.cost(usage) if self.price is not None else 0.0

    async def prepare(self) -> None:
        """Let the provider finish slow set-up off the event loop (e.g. hashing a local
        model file) and fix the cache identity; cheap once done."""
        if self._identity is None:
            await self.provider.prepare()
            self._identity = self.provider.cache_identity()

    def key(self, request: Request, sample: int = 0) -> str:
        identity = self._identity
        if identity is None:
            identity = self._identity = self.provider.cache_identity()
        return request_key(identity, request, sample)

    def prompt_key(self, prompt: str) -> str:
        """`key(request(prompt))`, hashing the part shared by every prompt only once."""
        keys = self._prompt_keys
        if keys is None or keys[0] is not self.decoding:
            identity = self._identity
            if identity is None:
                identity = self._identity = self.provider.cache_identity()
            keys = self._prompt_keys = (self.decoding, PromptKeys(identity, self.request("")))
        return keys[1].key(prompt)

    def lookup(self, key: str) -> Completion | None:
        """A synchronous cache read, so bulk callers can skip creating tasks for hits."""
        if self.cache is None:
            return None
        hit = self.cache.get(key)
        if hit is not None:
            self.stats.cache_hits += 1
        return hit

    def lookup_many(self, keys: Sequence[str]) -> list[Completion | None]:
        """`lookup` of many keys, in as few cache reads as the cache allows."""
        cache = self.cache
        if cache is None:
            return [None] * len(keys)
        get_many = getattr(cache, "get_many", None)  # a user's cache may predate get_many
        found = get_many(keys) if get_many is not None else [cache.get(k) for k in keys]
        self.stats.cache_hits += len(found) - found.count(None)
        return found

    async def generate(
        self, request: Request, *, sample: int = 0, key: str | None = None, flow: Hashable = None
    ) -> Generation:
        """The completion of `request` (its `sample`-th draw when temperature > 0).

        `flow` names who the call is for (a sweep's task): the connection serves waiting
        calls of one priority round-robin across flows. A call joined by an identical
        request keeps the flow of the caller that started it."""
        if self._identity is None:
            await self.prepare()
        key = key or self.key(request, sample)
        hit = self.lookup(key)
        if hit is not None:
            return Generation(hit, cached=True)
        if key in self._inflight:
            self.stats.shared += 1  # counted on joining, for live progress displays
        generation, joined = await self._inflight.run(
            key, partial(self._call_and_store, key, request, flow)
        )
        return Generation(generation.completion, shared=True) if joined else generation

    async def _call_and_store(self, key: str, request: Request, flow: Hashable) -> Generation:
        generation = await self._call(request, flow)
        if self.cache is not None:
            self.cache.set(key, generation.completion)
        return generation

    async def _call(self, request: Request, flow: Hashable = None) -> Generation:
        if request.n > 1 and not self.provider.supports_n:
            return await self._split(request, have=None, flow=flow)
        generation = await self._attempts(request, flow)
        if len(generation.completion.texts) < request.n:
            return await self._split(request, have=generation, flow=flow)
        return generation

    async def _split(
        self, request: Request, have: Generation | None, flow: Hashable = None
    ) -> Generation:
        """Emulate `n` with single-sample calls when the server ignores it."""
        parts = [have] if have is not None else []
        got = len(have.completion.texts) if have is not None else 0
        single = replace(request, n=1)
        results = await asyncio.gather(
            *(self._attempts(single, flow) for _ in range(request.n - got)),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        parts += [r for r in results if isinstance(r, Generation)]
        if failed:
            self._charge_to(failed[0], parts, failed[1:])
            raise failed[0]
        texts = tuple(t for p in parts for t in p.completion.texts)[: request.n]
        finish = tuple(f for p in parts for f in p.completion.finish_reasons)[: request.n]
        usage = sum((p.usage for p in parts), Usage())
        return Generation(
            Completion(texts, usage, finish),
            calls=sum(p.calls for p in parts),
            n429=sum(p.n429 for p in parts),
            usage=usage,
        )

    async def _attempts(self, request: Request, flow: Hashable = None) -> Generation:
        expected = expected_usage(request)
        tokens = expected.input_tokens + expected.output_tokens  # what tpm limits are charged
        budget = self.budget
        worst = worst_case_usage(request)
        worst_cost = Spend.of(worst, self.cost(worst))
        attempts = n429 = 0
        paid = Spend()  # what this request's attempts were charged so far
        while True:
            reservation: Reservation | None = None
            sent = False
            try:
                if budget is not None:
                    budget.check(worst_cost)  # stop before queueing, not after
                async with self.limiter.slot(tokens, self.priority, flow) as route:
                    if budget is not None:
                        reservation = await budget.reserve(worst_cost)
                    attempts += 1
                    sent = True
                    try:
                        async with asyncio.timeout(self.retry.timeout):
                            completion = await (route or self.provider).complete(request)
                    except TimeoutError as exc:
                        raise TransientError(
                            f"{self.spec}: no answer within {self.retry.timeout:g}s"
                        ) from exc
            except BudgetExceeded as exc:
                raise BudgetExceeded(str(exc), paid=paid, n429=n429) from None
            except ProviderError as err:
                # No status (timeout, dropped connection) or a broken 200: the server may
                # have generated, and billed, the whole answer. An error status was not.
                billed = err.status is None or 200 <= err.status < 300
                charge = worst_cost if billed else Spend(calls=1)
                paid += charge
                self._charge(reservation, charge)
                if isinstance(err, RateLimitError):
                    n429 += 1
                    self.stats.n429 += 1
                    self.limiter.on_rate_limited(
                        err.retry_after, self.retry.backoff(attempts, self._rng)
                    )
                delay = self.limiter.retry_delay(err, self.retry.delay(err, attempts, self._rng))
                if delay is None:
                    self.stats.failures += 1
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug(
                            "%s: attempt %d failed for good (%s)", self.spec, attempts, _why(err)
                        )
                    raise ModelCallError(err, attempts=attempts, n429=n429, paid=paid) from err
                self.stats.retries += 1
                if log.isEnabledFor(logging.DEBUG):
                    log.debug(
                        "%s: attempt %d failed (%s); retrying in %.2f s",
                        self.spec,
                        attempts,
                        _why(err),
                        delay,
                    )
                await asyncio.sleep(delay)
                continue
            except BaseException:
                # Cancelled mid-call: the request may have been sent and billed.
                if sent:
                    self._charge(reservation, worst_cost)
                raise
            usage = self._charged_usage(completion, worst)
            if usage != completion.usage:
                completion = replace(completion, usage=usage)
            charge = Spend.of(usage, self.cost(usage))
            paid += charge
            self._charge(reservation, charge)
            self.limiter.on_success(completion.rate_limit)
            return Generation(completion, calls=attempts, n429=n429, usage=paid.usage)

    def _charge(self, reservation: Reservation | None, charge: Spend) -> None:
        """Count what one attempt was charged, and settle its budget reservation with it."""
        self.stats.spend += charge
        if self.budget is not None and reservation is not None:
            self.budget.settle(reservation, charge)

    def _charged_usage(self, completion: Completion, worst: Usage) -> Usage:
        """What an answer is charged: its usage, or the worst case when that is unusable."""
        if not completion.usage_known:
            self.stats.unknown_usage += 1
            log.log(
                logging.WARNING if self.stats.unknown_usage == 1 else logging.DEBUG,
                "%s answered without a usable token usage; charged the request's worst case "
                "(%d + %d tokens; counted in stats.unknown_usage)",
                self.spec,
                worst.input_tokens,
                worst.output_tokens,
            )
            return worst
        usage = completion.usage
        if usage.input_tokens > worst.input_tokens or usage.output_tokens > worst.output_tokens:
            log.warning(
                "%s reported %d + %d tokens, more than the request's worst case (%d + %d); "
                "charged as reported",
                self.spec,
                usage.input_tokens,
                usage.output_tokens,
                worst.input_tokens,
                worst.output_tokens,
            )
        return usage

    def _charge_to(
        self, error: BaseException, parts: list[Generation], others: list[BaseException]
    ) -> None:
        """Add what the sibling calls of a split request paid to the error that ends it."""
        paid = sum((Spend.of(p.usage, self.cost(p.usage), p.calls) for p in parts), NOTHING)
        paid += sum(
            (e.paid for e in others if isinstance(e, BudgetExceeded | ModelCallError)), NOTHING
        )
        if isinstance(error, BudgetExceeded | ModelCallError):
            error.paid += paid
        if isinstance(error, ModelCallError):
            error.attempts += paid.calls


def _why(err: ProviderError) -> str:
    """A failure as a log line shows it: its class and status (messages are scrubbed)."""
    status = f" {err.status}" if err.status is not None else ""
    retry_after = getattr(err, "retry_after", None)
    asked = f", the server asked for {retry_after:g} s" if retry_after is not None else ""
    return f"{type(err).__name__}{status}{asked}: {err.message}"
