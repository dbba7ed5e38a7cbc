"""Fair sharing of a connection across flows (the tasks of a sweep), on virtual time.

A flow that starts waiting behind another flow's backlog is served within one round (one
grant per waiting flow), not after the backlog; priorities still come first (optimizer calls
ahead of scorer calls); without flows the order stays FIFO.
"""

from __future__ import annotations

import asyncio

import pytest

from opro.engine.engine import Engine
from opro.engine.evaluate import Progress
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.tasks.types import Example
from opro.testing.virtual_time import run


async def _serve(limiter: ConnectionLimiter, calls: list[tuple[str, str, int]]) -> list[str]:
    """Queue `calls` (name, flow, priority) in this order, each holding its slot 1 s; return
    the order in which they were admitted."""
    order: list[str] = []

    async def call(name: str, flow: str, priority: int) -> None:
        async with limiter.slot(priority=priority, flow=flow):
            order.append(name)
            await asyncio.sleep(1)

    tasks = []
    for name, flow, priority in calls:
        tasks.append(asyncio.create_task(call(name, flow, priority)))
        await asyncio.sleep(0)  # queued in exactly this order
    await asyncio.gather(*tasks)
    return order


def test_a_flow_behind_a_ten_times_backlog_is_served_within_one_round() -> None:
    limiter = ConnectionLimiter(LimitConfig(max_concurrency=1))
    backlog = [(f"a{i}", "a", 1) for i in range(100)]
    small = [(f"b{i}", "b", 1) for i in range(10)]
    order = run(_serve(limiter, backlog + small))
    # a0 took the free slot; then the two flows alternate until b is empty.
    assert order[:4] == ["a0", "a1", "b0", "a2"]
    positions = [order.index(f"b{i}") for i in range(10)]
    assert positions == [2 + 2 * i for i in range(10)]
    # FIFO within each flow.
    assert [n for n in order if n.startswith("a")] == [f"a{i}" for i in range(100)]


def test_priorities_still_come_before_flows() -> None:
    limiter = ConnectionLimiter(LimitConfig(max_concurrency=1))
    calls = [(f"a{i}", "a", 1) for i in range(5)] + [("b0", "b", 1), ("opt", "c", 0)]
    order = run(_serve(limiter, calls))
    assert order[:3] == ["a0", "opt", "a1"]  # the optimizer call overtakes both flows
    assert order[3] == "b0"


def test_without_flows_the_order_is_fifo() -> None:
    limiter = ConnectionLimiter(LimitConfig(max_concurrency=1))
    names = [f"s{i}" for i in range(6)]
    order = run(_serve(limiter, [(n, None, 1) for n in names]))  # type: ignore[misc]
    assert order == names


@pytest.mark.usefixtures("throttle_on_loop_clock")
def test_flows_also_share_the_rate_gate() -> None:
    limiter = ConnectionLimiter(LimitConfig(max_concurrency=100, rpm=60))  # 1 per second
    calls = [(f"a{i}", "a", 1) for i in range(20)] + [(f"b{i}", "b", 1) for i in range(2)]
    order = run(_serve(limiter, calls))
    assert order.index("b0") <= 3 and order.index("b1") <= 5


def test_two_evaluations_share_one_connection_fairly() -> None:
    """The sweep's case: a task with 10x the pairs started first does not hold the whole
    connection; the other task's pairs are served alternately with it."""

    async def main() -> tuple[int, int, float]:
        async with Engine(use_cache=False) as engine:
            scorer = engine.model(
                "simulated/s", limits=LimitConfig(max_concurrency=1), latency_s=1.0
            )
            examples = [Example(f"Is {i} even? Answer Yes or No.", "Yes") for i in range(20)]
            instructions = [f"Instruction {i}." for i in range(10)]
            big_done = 0

            def big_progress(p: Progress) -> None:
                nonlocal big_done
                big_done = p.done

            big = asyncio.create_task(
                engine.evaluate(
                    instructions, examples, scorer, flow="big", on_progress=big_progress
                )
            )
            await asyncio.sleep(0)  # the big task's workers queue first
            small = await engine.evaluate(["Be brief."], examples, scorer, flow="small")
            at_small_end = big_done
            small_end = asyncio.get_running_loop().time()
            report = await big
            return small.totals.pairs + report.totals.pairs, at_small_end, small_end

    pairs, big_done_when_small_finished, small_end = run(main())
    assert pairs == 220
    # One connection, 1 s per call, served alternately: the small task's 20 pairs finish
    # after about 40 calls, while the big task has done about 20 (FIFO: after 64 of them).
    assert big_done_when_small_finished <= 21
    assert small_end <= 42.0
