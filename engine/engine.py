"""`Engine`: the object a user holds. It owns what models share and builds the models.

Shared per engine (never module-global): one HTTP connection pool, one limiter per
connection key, one single-flight table and one result cache. Create it inside your own
event loop, use `engine.model(...)` and `engine.evaluate(...)`, and close it (or use
`async with`), so that sessions and the cache are released.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from opro.caches.base import ResultCache, flush_writes
from opro.caches.disk import DiskCache
from opro.caches.open import open_cache
from opro.engine.budget import Budget, BudgetExceeded
from opro.engine.evaluate import ErrorPolicy, EvalReport, Grader, Progress, evaluate
from opro.engine.leases import CapacityFactory
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Decoding, Generation, Model, ModelCallError, Price
from opro.engine.pool import Endpoint, EndpointPool, PoolPolicy, PoolProvider, pool_urls
from opro.engine.prices import known_price
from opro.engine.retry import RetryPolicy
from opro.engine.singleflight import SingleFlight
from opro.errors import SettingsError
from opro.providers.base import HttpPool, Provider
from opro.providers.errors import ConfigurationError
from opro.providers.registry import Connection, create_provider
from opro.tasks.grading import Grading, grade, grading_version, prepare_grade
from opro.tasks.prompts import Position
from opro.tasks.types import Example

log = logging.getLogger("opro.engine")


@dataclass(frozen=True, slots=True)
class TaskGrader:
    """The task layer's `grade()` as a `Grader`: the question supplies the options.

    `rules` picks our strict rules or the paper's reference rules.
    """

    rules: Grading = "strict"

    @property
    def version(self) -> str:
        return grading_version(self.rules)

    def __call__(self, prediction: str, example: Example) -> bool:
        return grade(prediction, example.target, question=example.input, rules=self.rules)

    def prepare(self, example: Example) -> Callable[[str], bool]:
        """This grader for one example, the example's share of the work done once."""
        return prepare_grade(example.target, question=example.input, rules=self.rules)


def connection_label(provider: Provider) -> str:
    """A connection as messages name it: the vendor and the server's host, never a key,
    a password from the URL or its query string."""
    base_url = getattr(provider, "base_url", None)
    if not isinstance(base_url, str):
        return provider.name
    try:
        parts = urlsplit(base_url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # an unparsable port
        return provider.name
    return f"{provider.name} at {host}{port}" if host else provider.name


# Settings that were flat keyword arguments of `Engine.model` and now live in one object.
_GROUPED = {
    **{f.name: "limits=LimitConfig" for f in fields(LimitConfig)},
    **{f.name: "decoding=Decoding" for f in fields(Decoding)},
}


def _check_grouped(
    limits: object, decoding: object, provider_options: Mapping[str, object]
) -> None:
    """One clear line for a shared setting passed the old way, or an object of the wrong type."""
    for name in provider_options:
        if name in _GROUPED:
            raise SettingsError(
                f"{name} is not a provider option: pass {_GROUPED[name]}({name}=...)"
            )
    if limits is not None and not isinstance(limits, LimitConfig):
        raise SettingsError(f"limits must be an opro.LimitConfig, got {type(limits).__name__}")
    if decoding is not None and not isinstance(decoding, Decoding):
        raise SettingsError(f"decoding must be an opro.Decoding, got {type(decoding).__name__}")


def _opened(spec: str, cache_dir: object, use_cache: bool) -> ResultCache:
    """The cache `Engine(cache="...")` names; giving it a directory or no cache as well is
    a contradiction, refused rather than resolved silently."""
    if cache_dir is not None or not use_cache:
        raise SettingsError("give the cache as cache=... or cache_dir=/use_cache=, not both")
    return open_cache(spec)


class Engine:
    """Builds `Model`s that share pools, limits, single-flight and the cache."""

    def __init__(
        self,
        *,
        cache: ResultCache | str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        use_cache: bool = True,
        retry: RetryPolicy | None = None,
        seed: int | None = None,
        budget: Budget | None = None,
        capacity: CapacityFactory | None = None,
    ) -> None:
        """`capacity` (see `engine.leases`) shares each rate-limited connection's rate
        beyond this process; None limits every connection here."""
        if isinstance(cache, str):  # a directory or redis://... (`caches.open`)
            self.cache: ResultCache | None = _opened(cache, cache_dir, use_cache)
        elif cache is not None:
            self.cache = cache
        elif use_cache:
            self.cache = DiskCache(Path(cache_dir) if cache_dir is not None else None)
        else:
            self.cache = None
        self.retry = retry or RetryPolicy()
        self.budget = budget or Budget()
        self._http = HttpPool()
        self._limiters: dict[str, ConnectionLimiter] = {}
        self._inflight: SingleFlight[str, Generation] = SingleFlight()
        self._models: list[Model] = []
        self._rng = random.Random(seed)
        self._capacity = capacity

    def model(
        self,
        spec: str,
        *,
        limits: LimitConfig | None = None,
        decoding: Decoding | None = None,
        base_url: str | Sequence[str] | None = None,
        api_key: str | None = None,
        price: Price | None = None,
        priority: int = 1,
        pool: PoolPolicy | None = None,
        **provider_options: Any,
    ) -> Model:
        """A model by `provider/model` name; limits are shared per connection key.

        `limits` (concurrency, rpm, tpm) belong to the connection, `decoding` (temperature,
        max tokens, stop, seed) to the requests this model builds. `price` defaults to the
        table in `engine.prices`; a USD budget needs one. `priority` orders waiting calls on
        a shared connection (lower first: give the optimizer 0 so that it never queues
        behind a scorer backlog). `provider_options` go to the provider (`api` for openai
        and local, `n_ctx`/`n_threads` for local, `latency_s` for simulated); one it does
        not take is a `SettingsError` that lists the ones it does.

        `base_url` may be a list of URLs: replicas of one model, served as one pool (see
        `engine.pool`; `pool` tunes how failing replicas are taken out). `limits.rpm`/`tpm`
        and the budget then apply to the whole model, the concurrency window and 429
        cooldowns to each replica. A list of one URL is that URL.
        """
        _check_grouped(limits, decoding, provider_options)
        limits = limits if limits is not None else LimitConfig()
        decoding = decoding if decoding is not None else Decoding()
        urls = pool_urls(base_url)
        if len(urls) > 1:
            pooled, pool_limiter = self._pool(spec, urls, api_key, limits, pool, provider_options)
            return self._add_model(pooled, pool_limiter, limits, decoding, price, priority)
        connection = Connection(urls[0] if urls else None, api_key, self.retry.timeout + 5.0)
        provider = create_provider(spec, connection, http=self._http, **provider_options)
        limiter = self._limiter(spec, provider, limits)
        return self._add_model(provider, limiter, limits, decoding, price, priority)

    def _limiter(self, spec: str, provider: Provider, limits: LimitConfig) -> ConnectionLimiter:
        """The limiter of `provider`'s connection, shared by every model on it."""
        key = provider.connection_key()
        limiter = self._limiters.get(key)
        if limiter is None:
            shared = None
            if self._capacity is not None and (limits.rpm is not None or limits.tpm is not None):
                shared = self._capacity(key, limits)
            limiter = self._limiters[key] = ConnectionLimiter(
                limits,
                name=connection_label(provider),
                max_pause=self.retry.max_retry_after,
                capacity=shared,
            )
        elif limiter.config != limits:
            raise ConfigurationError(
                f"{spec} shares a connection with a model already set up with other limits "
                f"({limiter.config}); give both the same limits"
            )
        return limiter

    def _pool(
        self,
        spec: str,
        urls: Sequence[str],
        api_key: str | None,
        limits: LimitConfig,
        policy: PoolPolicy | None,
        options: Mapping[str, Any],
    ) -> tuple[PoolProvider, EndpointPool]:
        """One provider and limiter per URL (each URL checked on its own), and the pool
        over them; pools over the same URLs share one (and so their model-wide rates)."""
        timeout = self.retry.timeout + 5.0
        providers = [
            create_provider(spec, Connection(url, api_key, timeout), http=self._http, **options)
            for url in urls
        ]
        provider = PoolProvider(providers)  # refuses providers that take no URL
        each = LimitConfig(max_concurrency=limits.max_concurrency)  # rates are the pool's
        endpoints = [Endpoint(p, self._limiter(spec, p, each), i) for i, p in enumerate(providers)]
        key = provider.connection_key()
        found = self._limiters.get(key)
        if isinstance(found, EndpointPool):
            if found.limits != limits or found.policy != (policy or found.policy):
                raise ConfigurationError(
                    f"{spec}: the pool is already set up with other limits ({found.limits}); "
                    "give both the same limits"
                )
            return provider, found
        shared = None
        if self._capacity is not None and (limits.rpm is not None or limits.tpm is not None):
            shared = self._capacity(key, limits)
        limiter = EndpointPool(
            endpoints,
            limits,
            capacity=shared,
            name=f"{provider.name} pool of {len(urls)} "
            f"({', '.join(connection_label(p).rpartition(' at ')[2] for p in providers)})",
            policy=policy,
            max_pause=self.retry.max_retry_after,
        )
        self._limiters[key] = limiter
        return provider, limiter

    def _add_model(
        self,
        provider: Provider,
        limiter: ConnectionLimiter,
        limits: LimitConfig,
        decoding: Decoding,
        price: Price | None,
        priority: int,
    ) -> Model:
        price = price if price is not None else known_price(provider.spec)
        if price is None and self.budget.max_usd is not None:
            raise ConfigurationError(
                f"no known price for {provider.spec}, so a USD budget cannot bound it: "
                "give its price with --price IN,OUT (--optimizer-price for the optimizer; "
                "USD per million tokens)"
            )
        model = Model(
            provider,
            limiter=limiter,
            retry=self.retry,
            cache=self.cache,
            inflight=self._inflight,
            decoding=decoding,
            price=price,
            rng=random.Random(self._rng.random()),
            budget=self.budget,
            priority=priority,
        )
        self._models.append(model)
        log.info("%s via %s: %s", provider.spec, limiter.name, _describe(limits, price))
        return model

    @property
    def models(self) -> tuple[Model, ...]:
        """The models built so far (their `stats` say what each spent this session)."""
        return tuple(self._models)

    async def evaluate(
        self,
        instructions: Sequence[str],
        examples: Sequence[Example],
        scorer: Model,
        *,
        grader: Grader | None = None,
        reference_grader: Grader | None = None,
        grading: Grading = "strict",
        position: Position = "Q_begin",
        qa_framing: bool | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        errors: ErrorPolicy | None = None,
        flow: Hashable = None,
        answered: dict[str, Generation | ModelCallError | BudgetExceeded] | None = None,
        answered_price: Price | None = None,
    ) -> EvalReport:
        """`evaluate` with the task graders: `accuracy` by `grader` (default: the strict
        rules), `accuracy_reference` by `reference_grader` (default: the paper's rules);
        `grading` says which of the two ranks the instructions; `flow` names who the calls
        are for (fair sharing of a connection, see `evaluate`)."""
        await scorer.prepare()  # slow provider set-up in a thread, before the sync key loop
        return await evaluate(
            instructions,
            examples,
            scorer,
            grader=grader or TaskGrader(),
            reference_grader=reference_grader or TaskGrader("reference"),
            grading=grading,
            position=position,
            qa_framing=qa_framing,
            on_progress=on_progress,
            errors=errors,
            flow=flow,
            answered=answered,
            answered_price=answered_price,
        )

    async def aclose(self) -> None:
        """Cancel the calls still in flight (their callers get `FlightCancelled`), then close
        the providers, the HTTP pool and the cache, which those calls would otherwise use.
        Results the cache has queued are stored first (in a thread: the loop keeps running)."""
        await self._inflight.aclose()
        for limiter in self._limiters.values():
            if isinstance(limiter, EndpointPool):
                await limiter.aclose()  # its health probes use the HTTP pool
        for model in self._models:
            await model.provider.aclose()
        await self._http.aclose()
        if self.cache is not None:
            await flush_writes(self.cache)
            self.cache.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _describe(limits: LimitConfig, price: Price | None) -> str:
    """A model's limits and price as the log shows them."""
    window = "adapts to 429s" if limits.rpm is None else "fixed"
    parts = [f"up to {limits.max_concurrency} calls in flight ({window})"]
    parts.append(f"{limits.rpm:g} requests/min" if limits.rpm is not None else "no request rate")
    if limits.tpm is not None:
        parts.append(f"{limits.tpm:g} tokens/min")
    if price is not None:
        parts.append(f"${price.input_per_m:g} + ${price.output_per_m:g} per million tokens")
    else:
        parts.append("no known price")
    return ", ".join(parts)
