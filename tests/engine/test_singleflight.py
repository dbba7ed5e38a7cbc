"""SingleFlight: sharing, cancellation, late joiners, exceptions and closing, on virtual time."""

from __future__ import annotations

import asyncio
from contextlib import suppress

import pytest

from opro.engine.engine import Engine
from opro.engine.singleflight import FlightCancelled, SingleFlight
from opro.testing.virtual_time import run


class Call:
    """A factory whose calls wait for `release` and record how each one ended."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0
        self.ended: list[str] = []
        self.fail: Exception | None = None

    async def __call__(self) -> str:
        self.started += 1
        number = self.started
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.ended.append(f"cancelled {number}")
            raise
        if self.fail is not None:
            self.ended.append(f"failed {number}")
            raise self.fail
        self.ended.append(f"answered {number}")
        return f"answer {number}"


def test_concurrent_callers_share_one_call() -> None:
    async def main() -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        call = Call()
        tasks = [asyncio.create_task(flights.run("k", call)) for _ in range(3)]
        await asyncio.sleep(0)
        assert "k" in flights and len(flights) == 1
        call.release.set()
        results = await asyncio.gather(*tasks)
        assert results == [("answer 1", False), ("answer 1", True), ("answer 1", True)]
        assert call.started == 1 and len(flights) == 0

    run(main())


def test_one_cancelled_waiter_of_several_leaves_the_call_running() -> None:
    async def main() -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        call = Call()
        tasks = [asyncio.create_task(flights.run("k", call)) for _ in range(3)]
        await asyncio.sleep(0)
        tasks[0].cancel()  # the one that started the call
        await asyncio.gather(tasks[0], return_exceptions=True)
        assert tasks[0].cancelled() and "k" in flights
        call.release.set()
        assert await asyncio.gather(*tasks[1:]) == [("answer 1", True)] * 2
        assert call.ended == ["answered 1"]

    run(main())


def test_the_last_waiter_leaving_cancels_the_call_and_forgets_the_key_at_once() -> None:
    async def main() -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        call = Call()
        tasks = [asyncio.create_task(flights.run("k", call)) for _ in range(2)]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert "k" not in flights  # not only once the call's task has unwound
        await asyncio.sleep(0)
        assert call.ended == ["cancelled 1"]

    run(main())


def test_a_late_joiner_gets_a_fresh_call_not_the_cancelled_one() -> None:
    async def main() -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        call = Call()
        first = asyncio.create_task(flights.run("k", call))
        await asyncio.sleep(0)
        first.cancel()
        with suppress(asyncio.CancelledError):
            await first
        # The first call is still unwinding its cancellation; a new caller must not join it.
        call.release.set()
        assert await flights.run("k", call) == ("answer 2", False)
        assert call.ended == ["cancelled 1", "answered 2"]

    run(main())


def test_every_waiter_gets_the_exception_and_nothing_is_remembered() -> None:
    async def main() -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        call = Call()
        call.fail = ValueError("boom")
        tasks = [asyncio.create_task(flights.run("k", call)) for _ in range(3)]
        await asyncio.sleep(0)
        call.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, ValueError) and str(r) == "boom" for r in results)
        assert call.started == 1 and len(flights) == 0
        call.fail = None
        assert await flights.run("k", call) == ("answer 2", False)  # a new call, not the error

    run(main())


def test_aclose_cancels_and_awaits_open_calls() -> None:
    async def main() -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        call = Call()
        waiters = [asyncio.create_task(flights.run(key, call)) for key in ("a", "a", "b")]
        for _ in range(2):  # the waiters start the calls, the calls start waiting
            await asyncio.sleep(0)
        assert call.started == 2
        await flights.aclose()
        assert sorted(call.ended) == ["cancelled 1", "cancelled 2"]  # unwound before it returned
        assert len(flights) == 0
        results = await asyncio.gather(*waiters, return_exceptions=True)
        # The waiters were not cancelled themselves: they learn why their answer will not come.
        assert all(isinstance(r, FlightCancelled) for r in results)

    run(main())


def test_engine_aclose_cancels_and_awaits_calls_in_flight() -> None:
    async def main() -> None:
        engine = Engine(use_cache=False)
        model = engine.model("simulated/slow", latency_s=1000.0)
        pending = asyncio.create_task(model.generate(model.request("q")))
        for _ in range(3):
            await asyncio.sleep(0)
        started = asyncio.get_running_loop().time()
        await engine.aclose()
        assert asyncio.get_running_loop().time() == started  # cancelled, not waited out
        assert pending.done()
        with pytest.raises(FlightCancelled):
            pending.result()

    run(main())
