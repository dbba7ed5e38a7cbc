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
from opro.engine.budget import Budget
from opro.engine.evaluate import ErrorPolicy, EvalReport, Grader, Progress, evaluate
from opro.engine.leases import CapacityFactory
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Decoding, Generation, Model, Price
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


class Engine:
    """Builds `Model`s that share pools, limits, single-flight and the cache."""

    def __init__(
        self,
        *,
        cache: ResultCache | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        use_cache: bool = True,
        retry: RetryPolicy | None = None,
        seed: int | None = None,
        budget: Budget | None = None,
        capacity: CapacityFactory | None = None,
    ) -> None:
        """`capacity` (see `engine.leases`) shares each rate-limited connection's rate
        beyond this process; None limits every connection here."""
        if cache is not None:
            self.cache: ResultCache | None = cache
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
        base_url: str | None = None,
        api_key: str | None = None,
        price: Price | None = None,
        priority: int = 1,
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
        """
        _check_grouped(limits, decoding, provider_options)
        limits = limits if limits is not None else LimitConfig()
        decoding = decoding if decoding is not None else Decoding()
        connection = Connection(base_url, api_key, timeout=self.retry.timeout + 5.0)
        provider = create_provider(spec, connection, http=self._http, **provider_options)
        price = price if price is not None else known_price(provider.spec)
        if price is None and self.budget.max_usd is not None:
            raise ConfigurationError(
                f"no known price for {provider.spec}, so a USD budget cannot bound it: "
                "give its price with --price IN,OUT (--optimizer-price for the optimizer; "
                "USD per million tokens)"
            )
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
        )

    async def aclose(self) -> None:
        """Cancel the calls still in flight (their callers get `FlightCancelled`), then close
        the providers, the HTTP pool and the cache, which those calls would otherwise use.
        Results the cache has queued are stored first (in a thread: the loop keeps running)."""
        await self._inflight.aclose()
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
