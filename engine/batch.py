"""Batch mode: an evaluation's pending pairs through the vendor's batch API, at its price.

Data enters as the requests still missing from the cache, one per distinct cache key
(`engine.batch_evaluate.pending_requests` finds them as `evaluate` would); it leaves as
the same cache filled under the same keys, and an `answered` map (key -> `Generation` or
`ModelCallError`) that `evaluate` grades as those pairs' calls, so reports count the
batch's calls, tokens and cost.

`BatchRunner.run` does, per round: split the requests into batches within the vendor's
limits (requests and bytes); for each, reserve its worst case at the batch price in the
run's budget (a batch that cannot fit is not sent: its pairs are skipped, as a live call
would be), write the intent with a fresh token to the run directory's `batches.json`
(`engine.batch_state`), create the batch (the token travels with it), record its id; poll
every batch with capped exponential backoff; on the end, write each answer to the cache,
settle the reservation with what the vendor billed (succeeded requests' usage at the batch
price; failed ones are not billed) and mark the batch collected. Failed requests are
classified: a request the vendor refused (4xx) is a failed pair; one the batch did not reach
(expired, cancelled, 429/5xx) is retried, in a follow-up batch or live (`BatchSettings.retry`).
A batch that fails validation as a whole fails its pairs. Infrastructure failures are never
graded and never cached.

On `resume`, batches of earlier sessions come first: an intent without an id is looked up
at the vendor by its token (a kill -9 between create and record), and every uncollected
batch is polled and collected instead of being submitted again; its reservation is taken
back from the prior spend the ledger recorded (`Budget.adopt`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from opro.caches.base import flush_writes
from opro.checks import COUNT, DELAY_SECONDS
from opro.engine.batch_state import BatchEntry, BatchStateError, BatchStateFile
from opro.engine.budget import BudgetExceeded, Reservation
from opro.engine.model import Generation, Model, ModelCallError, Price
from opro.engine.prices import batch_price
from opro.engine.spend import NOTHING, Spend
from opro.engine.tokens import worst_case_usage
from opro.errors import SettingsError
from opro.providers.batch import BatchApi, BatchState, Intent, ItemResult, batch_api
from opro.providers.errors import BadRequestError, ProviderError, TransientError
from opro.providers.types import Request

log = logging.getLogger("opro.batch")

Retry = Literal["batch", "live"]
Sleep = Callable[[float], Awaitable[None]]
SUBMIT_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """How batch mode waits and retries.

    `retry`: where requests a batch did not answer (expired, cancelled, 429/5xx) go next:
    "batch" (a follow-up batch, up to `rounds` batches per request; then they are failed
    pairs) or "live" (the live API, at the live price). Polls start `poll_first_s` apart
    and double up to `poll_max_s`.
    """

    retry: Retry = "batch"
    rounds: int = 3
    poll_first_s: float = 5.0
    poll_max_s: float = 300.0

    def __post_init__(self) -> None:
        if self.retry not in ("batch", "live"):
            raise SettingsError(f"batch retry must be batch or live, got {self.retry!r}")
        COUNT.check("batch rounds", self.rounds)
        if self.rounds < 1:
            raise SettingsError(f"batch rounds must be >= 1, got {self.rounds}")
        DELAY_SECONDS.check("the first batch poll interval", self.poll_first_s)
        DELAY_SECONDS.check("the longest batch poll interval", self.poll_max_s)


@dataclass(slots=True)
class BatchOutcome:
    """What batch mode did: the answers for `evaluate`, what it cost, what it refused."""

    answered: dict[str, Generation | ModelCallError | BudgetExceeded] = field(default_factory=dict)
    spend: Spend = NOTHING
    batches: int = 0  # batches this session created
    adopted: int = 0  # batches of earlier sessions it collected
    refused: int = 0  # requests the budget kept out of any batch
    live: int = 0  # requests left to the live API (retry="live")


class BatchRunner:
    """Runs one model's pending requests through its vendor's batch API (module docstring)."""

    def __init__(
        self,
        model: Model,
        run_dir: str | Path,
        settings: BatchSettings = BatchSettings(),
        *,
        resume: bool = False,
        sleep: Sleep = asyncio.sleep,
        api: BatchApi | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        # A provider without a batch API (local/, simulated/, google/) fails here, one line.
        self.api = api or batch_api(model.provider)
        self.settings = settings
        self.resume = resume
        self.sleep = sleep
        self.notify = notify
        self.file = BatchStateFile(run_dir)
        self.price: Price | None = batch_price(model.spec, model.price)
        self._entries: list[BatchEntry] = []
        self._reservations: dict[str, Reservation] = {}  # by token, this session's
        self._refused: dict[str, BudgetExceeded] = {}  # keys the budget kept out
        self._sent: dict[str, int] = {}  # batches each key was sent in (attempts)
        self._lock = asyncio.Lock()

    async def run(self, requests: Mapping[str, Request]) -> BatchOutcome:
        out = BatchOutcome()
        self._entries = await asyncio.to_thread(self.file.load)
        mine = [e for e in self._entries if e.spec == self.model.spec]
        open_ = [e for e in mine if e.status in ("intent", "submitted")]
        if open_ and not self.resume:
            raise BatchStateError(
                f"{self.file.path} holds {len(open_)} batch(es) an earlier session submitted "
                "and did not collect: add --resume to collect them instead of paying again"
            )
        recovered = await self._recover(open_)
        for entry in recovered:  # earlier sessions' attempts count against the rounds
            for key in entry.keys:
                self._sent[key] = self._sent.get(key, 0) + 1
        covered = {key for entry in recovered for key in entry.keys}
        todo = {k: r for k, r in requests.items() if k not in covered}
        failed: dict[str, ProviderError] = {}
        await asyncio.gather(
            *(self._collect(e, requests, out, failed, adopt=True) for e in recovered)
        )
        round_ = 1 + max((e.round for e in recovered), default=0)
        todo.update(self._sort(failed, requests, out))
        last = dict(failed)  # each key's latest failure, for the error of a key out of rounds
        while todo:
            for key in [k for k in todo if self._sent.get(k, 0) >= self.settings.rounds]:
                error = last.get(key) or TransientError("no batch round left")
                out.answered[key] = ModelCallError(error, attempts=self._sent[key], n429=0)
                del todo[key]
            if not todo:
                break
            failed = {}
            entries = await self._submit_all(todo, round_, out)
            await asyncio.gather(
                *(self._collect(e, requests, out, failed, adopt=False) for e in entries)
            )
            last.update(failed)
            todo = self._sort(failed, requests, out)
            round_ += 1
        for key in [k for k in requests if k not in out.answered]:
            if key in self._refused:
                out.answered[key] = self._refused[key]
        return out

    def _sort(
        self,
        failed: Mapping[str, ProviderError],
        requests: Mapping[str, Request],
        out: BatchOutcome,
    ) -> dict[str, Request]:
        """Failed requests: those another attempt can fix are returned for the next batch
        (or, with retry="live", left unanswered so that `evaluate` calls them live); the
        others become failed pairs."""
        retry: dict[str, Request] = {}
        for key, err in failed.items():
            if not err.retryable:
                out.answered[key] = ModelCallError(err, attempts=self._sent.get(key, 1), n429=0)
            elif key in requests:
                retry[key] = requests[key]
        if self.settings.retry == "live":
            out.live += len(retry)
            return {}
        return retry

    # -- recovery ---------------------------------------------------------------------------

    async def _recover(self, entries: list[BatchEntry]) -> list[BatchEntry]:
        """Earlier sessions' batches that exist at the vendor (intents looked up by token)."""
        found: list[BatchEntry] = []
        for entry in entries:
            if entry.status == "intent":
                intent = Intent(entry.token, len(entry.keys), entry.created_after)
                batch_id = await self.api.find(intent)
                if batch_id is None:
                    self._say(f"batch intent {entry.token} was never created: sending afresh")
                    entry.status = "abandoned"
                    await self._save()
                    continue
                self._say(f"found batch {batch_id} of an earlier session: collecting it")
                entry.batch_id, entry.status = batch_id, "submitted"
                await self._save()
            found.append(entry)
        return found

    # -- submission ---------------------------------------------------------------------------

    def _chunks(self, todo: Mapping[str, Request]) -> list[list[tuple[str, bytes, Request]]]:
        limits = self.api.limits
        chunks: list[list[tuple[str, bytes, Request]]] = [[]]
        size = 0
        for key, request in todo.items():
            line = self.api.line(key, request)
            if chunks[-1] and (
                len(chunks[-1]) >= limits.max_requests or size + len(line) + 1 > limits.max_bytes
            ):
                chunks.append([])
                size = 0
            chunks[-1].append((key, line, request))
            size += len(line) + 1
        return [c for c in chunks if c]

    def _worst(self, requests: Sequence[Request]) -> Spend:
        total = NOTHING
        for request in requests:
            usage = worst_case_usage(request)
            cost = self.price.cost(usage) if self.price is not None else 0.0
            total += Spend.of(usage, cost)
        return total

    async def _submit_all(
        self, todo: Mapping[str, Request], round_: int, out: BatchOutcome
    ) -> list[BatchEntry]:
        entries: list[BatchEntry] = []
        budget = self.model.budget
        for chunk in self._chunks(todo):
            worst = self._worst([r for _, _, r in chunk])
            keys = [k for k, _, _ in chunk]
            if budget is not None:
                try:
                    budget.check(worst)
                    reservation: Reservation | None = await budget.reserve(worst)
                except BudgetExceeded as exc:
                    self._say(f"{len(keys)} requests not sent: {exc}")
                    out.refused += len(keys)
                    self._refused.update(dict.fromkeys(keys, exc))
                    continue
            else:
                reservation = None
            entry = BatchEntry.new(self.model.spec, keys, worst, round_)
            for key in keys:
                self._sent[key] = self._sent.get(key, 0) + 1
            self._entries.append(entry)
            await self._save()  # the intent, before the batch exists
            try:
                entry.batch_id = await self._create(entry, [line for _, line, _ in chunk])
            except ModelCallError:
                # Refused, or not found after failed attempts: never created, nothing billed.
                if budget is not None and reservation is not None:
                    budget.settle(reservation, NOTHING)
                entry.status = "abandoned"
                await self._save()
                raise
            except BaseException:
                # Interrupted: the batch may exist. Its worst case stays charged, and the
                # intent on disk lets a resumed session find it and take the charge back.
                if budget is not None and reservation is not None:
                    budget.settle(reservation, worst)
                raise
            entry.status = "submitted"
            if reservation is not None:
                self._reservations[entry.token] = reservation
            await self._save()
            out.batches += 1
            self._say(
                f"batch {entry.batch_id} submitted: {len(keys)} requests (round {round_}); "
                f"it may take up to 24 h, polled every {self.settings.poll_first_s:g} to "
                f"{self.settings.poll_max_s:g} s"
            )
            entries.append(entry)
        return entries

    async def _create(self, entry: BatchEntry, lines: list[bytes]) -> str:
        """Create the batch; after a transient failure look it up by its token before trying
        again (the create may have reached the vendor)."""
        intent = Intent(entry.token, len(lines), entry.created_after)
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                return await self.api.submit(lines, entry.token)
            except TransientError as err:
                found = await self.api.find(intent)
                if found is not None:
                    return found
                if attempt == SUBMIT_ATTEMPTS:
                    raise ModelCallError(err, attempts=attempt, n429=0) from err
                await self.sleep(self._delay(attempt))
            except ProviderError as err:
                raise ModelCallError(err, attempts=attempt, n429=0) from err
        raise AssertionError("unreachable")  # pragma: no cover

    # -- polling and collection -----------------------------------------------------------------

    def _delay(self, polls: int) -> float:
        s = self.settings
        return min(s.poll_max_s, s.poll_first_s * 2.0 ** max(0, polls - 1))

    async def _wait(self, batch_id: str) -> BatchState:
        polls = 0
        seen: tuple[str, int] | None = None
        while True:
            polls += 1
            try:
                state = await self.api.state(batch_id)
            except ProviderError as err:
                if not err.retryable:
                    raise ModelCallError(err, attempts=polls, n429=0) from err
                log.info("%s: polling batch %s failed (%s)", self.model.spec, batch_id, err)
            else:
                if state.phase != "running":
                    return state
                if (state.status, state.done) != seen:  # say what changed, not every poll
                    seen = (state.status, state.done)
                    self._say(
                        f"batch {batch_id}: {state.status}, {state.done} of {state.total} "
                        "requests done"
                    )
            await self.sleep(self._delay(polls))

    async def _collect(
        self,
        entry: BatchEntry,
        requests: Mapping[str, Request],
        out: BatchOutcome,
        failed: dict[str, ProviderError],
        *,
        adopt: bool,
    ) -> None:
        budget = self.model.budget
        assert entry.batch_id is not None
        reservation = self._reservations.pop(entry.token, None)
        if adopt:
            out.adopted += 1
            if budget is not None:
                reservation = budget.adopt(entry.worst)
                if reservation is None:  # not in this session's prior spend: reserve it
                    try:
                        reservation = await budget.reserve(entry.worst)
                    except BudgetExceeded:
                        # Sent and billed whatever the cap says now: collect and charge it.
                        reservation = Reservation(NOTHING)
        state = await self._wait(entry.batch_id)
        if state.phase == "failed":
            message = f"{self.api.where}: batch {entry.batch_id} failed: {state.message}"
            results = [ItemResult(k, error=BadRequestError(message)) for k in entry.keys]
        else:
            results = await self.api.results(entry.batch_id)
        ours = list(entry.keys)
        charge = self._absorb(entry, results, requests, out, failed)
        await flush_writes(self.model.cache)
        # Collected before settled: a crash in between leaves the worst case in the ledger
        # (an overcount), never a collected batch whose reservation a resume would take back.
        entry.status = "collected"
        entry.keys = []  # a collected batch needs no keys: the file stays small over steps
        await self._save()
        self.model.stats.spend += charge
        out.spend += charge
        if budget is not None and reservation is not None:
            budget.settle(reservation, charge)
        n_failed = sum(1 for k in ours if k in failed)
        self._say(
            f"batch {entry.batch_id} {state.status}: {charge.calls} answers, {n_failed} failed, "
            f"${charge.cost_usd:.4f} at the batch price"
        )

    def _absorb(
        self,
        entry: BatchEntry,
        results: list[ItemResult],
        requests: Mapping[str, Request],
        out: BatchOutcome,
        failed: dict[str, ProviderError],
    ) -> Spend:
        """Cache the answers, record the failures; return what the vendor billed."""
        ours = set(entry.keys)
        charge = NOTHING
        seen: set[str] = set()
        cache = self.model.cache
        for item in results:
            key = item.custom_id
            if key not in ours or key in seen:
                continue  # not a request of this batch: nothing of ours to grade or pay
            seen.add(key)
            request = requests.get(key)
            worst = worst_case_usage(request) if request is not None else None
            if item.completion is not None:
                completion = item.completion
                usage = completion.usage
                if not completion.usage_known and worst is not None:
                    usage = worst  # charged the worst case, as a live call would be
                cost = self.price.cost(usage) if self.price is not None else 0.0
                charge += Spend.of(usage, cost)
                if cache is not None:
                    cache.set(key, completion)
                calls = self._sent.get(key, 1)
                out.answered[key] = Generation(completion, calls=calls, usage=usage)
                continue
            assert item.error is not None
            if item.billed and worst is not None:
                cost = self.price.cost(worst) if self.price is not None else 0.0
                charge += Spend.of(worst, cost)
            failed[key] = item.error
        for key in ours - seen:
            failed[key] = TransientError(
                f"{self.api.where}: batch {entry.batch_id} returned no result for a request"
            )
        return charge

    def _say(self, line: str) -> None:
        """A milestone of a batch, logged and shown to the user (`notify`)."""
        log.info("%s: %s", self.model.spec, line)
        if self.notify is not None:
            self.notify(line)

    async def _save(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self.file.save, list(self._entries))
