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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from opro.caches.base import ResultCache, flush_writes
from opro.caches.disk import DiskCache
from opro.engine.budget import Budget
from opro.engine.evaluate import ErrorPolicy, EvalReport, Grader, Progress, evaluate
from opro.engine.limits import DEFAULT_MAX_CONCURRENCY, ConnectionLimiter, LimitConfig
from opro.engine.model import Decoding, Generation, Model, Price
from opro.engine.prices import known_price
from opro.engine.retry import RetryPolicy
from opro.engine.singleflight import SingleFlight
from opro.providers.base import HttpPool, Provider
from opro.providers.errors import ConfigurationError
from opro.providers.registry import ProviderOptions, create_provider
from opro.tasks.grading import Grading, grade, grading_version
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
    ) -> None:
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

    def model(
        self,
        spec: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api: str | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        rpm: float | None = None,
        tpm: float | None = None,
        temperature: float = 0.0,
        max_tokens: int = 256,
        stop: Sequence[str] = (),
        seed: int | None = None,
        price: Price | None = None,
        latency_s: float = 0.0,
        priority: int = 1,
        n_ctx: int | None = None,
        n_threads: int | None = None,
    ) -> Model:
        """A model by `provider/model` name; limits are shared per connection key.

        `price` defaults to the table in `engine.prices`; a USD budget needs one.
        `priority` orders waiting calls on a shared connection (lower first: give the
        optimizer 0 so that it never queues behind a scorer backlog).
        """
        options = ProviderOptions(
            base_url=base_url,
            api_key=api_key,
            api=api,
            timeout=self.retry.timeout + 5.0,
            latency_s=latency_s,
            n_ctx=n_ctx,
            n_threads=n_threads,
        )
        provider = create_provider(spec, options, http=self._http)
        price = price if price is not None else known_price(provider.spec)
        if price is None and self.budget.max_usd is not None:
            raise ConfigurationError(
                f"no known price for {provider.spec}, so a USD budget cannot bound it: "
                "give its price with --price IN,OUT (--optimizer-price for the optimizer; "
                "USD per million tokens)"
            )
        limits = LimitConfig(max_concurrency=max_concurrency, rpm=rpm, tpm=tpm)
        key = provider.connection_key()
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = ConnectionLimiter(
                limits, name=connection_label(provider), max_pause=self.retry.max_retry_after
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
            decoding=Decoding(temperature, max_tokens, tuple(stop), seed),
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
    ) -> EvalReport:
        """`evaluate` with the task graders: `accuracy` by `grader` (default: the strict
        rules), `accuracy_reference` by `reference_grader` (default: the paper's rules);
        `grading` says which of the two ranks the instructions."""
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
