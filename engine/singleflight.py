"""Single-flight: concurrent callers of the same key share one running call.

`SingleFlight.run(key, factory)` starts `factory()` as a task when no call for `key` is in
flight, and otherwise waits for the running one; every waiter gets its result or its
exception. Nothing is remembered once the call lands (caching is the caller's business),
so a failure is never handed to a later caller.

Cancellation is per waiter: a cancelled waiter leaves, and the call goes on for the others.
When the last waiter leaves, nobody wants the answer, so the call is cancelled too, and
its key is forgotten *before* the cancellation is delivered: a caller arriving while the
task unwinds starts a fresh call instead of joining a dying one (which would hand it a
`CancelledError` nobody asked for). `aclose()` cancels every open call and waits for them;
their waiters get `FlightCancelled`, not a `CancelledError` of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from functools import partial
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class FlightCancelled(RuntimeError):
    """The shared call was cancelled by its owner (e.g. the engine closed), not by this caller."""


class _Flight(Generic[V]):
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[V]) -> None:
        self.task = task
        self.waiters = 0


class SingleFlight(Generic[K, V]):
    """At most one running call per key; see the module docstring."""

    def __init__(self) -> None:
        self._flights: dict[K, _Flight[V]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, key: object) -> bool:
        return key in self._flights

    async def run(self, key: K, factory: Callable[[], Coroutine[Any, Any, V]]) -> tuple[V, bool]:
        """The result of the call for `key`, and whether this caller joined one already running.

        `factory` is called only when no call for `key` is in flight.
        """
        flight = self._flights.get(key)
        joined = flight is not None
        if flight is None:
            task = asyncio.get_running_loop().create_task(factory())
            flight = self._flights[key] = _Flight(task)
            task.add_done_callback(partial(self._landed, key))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task), joined
        except asyncio.CancelledError:
            if not flight.task.cancelled():
                # This waiter was cancelled; when it is the last one, nobody wants the answer.
                if flight.waiters == 1 and not flight.task.done():
                    self._forget(key, flight)  # before the cancellation, see the docstring
                    flight.task.cancel()
                raise
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # cancelled ourselves, at the same time as the call
            raise FlightCancelled(f"the shared call for {key!r} was cancelled") from None
        finally:
            flight.waiters -= 1

    async def aclose(self) -> None:
        """Cancel every call in flight and wait until each has finished unwinding."""
        flights = list(self._flights.items())
        for key, flight in flights:
            self._forget(key, flight)
            flight.task.cancel()
        if flights:
            await asyncio.gather(*(f.task for _, f in flights), return_exceptions=True)

    def _forget(self, key: K, flight: _Flight[V]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def _landed(self, key: K, task: asyncio.Task[V]) -> None:
        flight = self._flights.get(key)
        if flight is not None and flight.task is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved here; the waiters re-raise it themselves
