"""One budget across nodes without Ray: a `BudgetBank` and several `ChunkedBudget`s
calling it directly, the driver's journal played by a task that records each write."""

from __future__ import annotations

import asyncio
import random

import pytest

from opro.cluster.budget import BudgetBank, ChunkedBudget
from opro.engine.budget import BudgetExceeded
from opro.engine.spend import Spend

CALL = Spend(1, 300, 100, 0.0)  # a call's worst case


async def relay(bank: BudgetBank, writes: list[tuple[Spend, Spend]]) -> None:
    """The driver: each journal write is recorded, then acknowledged."""
    while True:
        seq, settled, bound = await bank.journal.queue.get()
        live = bank.budget.spent + bank.budget.reserved
        assert bound.covers(live)  # nothing reserved that the file's bound misses
        writes.append((settled, bound))
        bank.journal.written(seq)


def node(bank: BudgetBank, holder: str, cap: int) -> ChunkedBudget:
    async def grant(size: Spend, least: Spend) -> tuple[int, Spend, Spend]:
        await asyncio.sleep(0)
        return await bank.grant(holder, size, least)

    async def settle(chunk: int, cost: Spend) -> Spend:
        await asyncio.sleep(0)
        return bank.settle(holder, chunk, cost)

    return ChunkedBudget(grant, settle, max_usd=None, max_tokens=cap)


async def test_nodes_never_spend_past_the_cap_together() -> None:
    cap = 40_000
    bank = BudgetBank(None, cap, Spend())
    writes: list[tuple[Spend, Spend]] = []
    driver = asyncio.create_task(relay(bank, writes))
    nodes = [node(bank, f"node{i}", cap) for i in range(3)]
    rng = random.Random(0)

    async def calls(budget: ChunkedBudget) -> None:
        try:
            while True:
                budget.check(CALL)
                reservation = await budget.reserve(CALL)
                await asyncio.sleep(0)
                used = Spend(1, 300, rng.randint(1, 100), 0.0)  # at most the worst case
                budget.settle(reservation, used)
        except BudgetExceeded:
            pass

    await asyncio.gather(*(calls(b) for b in nodes for _ in range(8)))
    for b in nodes:
        await b.flush()
    spent = sum((b.spent for b in nodes), Spend())
    assert spent == bank.budget.spent  # every chunk settled with what its calls cost
    assert spent.tokens <= cap
    assert cap - spent.tokens < CALL.tokens  # and the cap was used, not left idle
    assert bank.budget.reserved == Spend()
    await bank.budget.flush()
    assert writes[-1] == (spent, spent)  # the final write: a tight bound
    driver.cancel()


async def test_a_lost_node_has_its_open_chunks_counted_in_full() -> None:
    bank = BudgetBank(None, 1_000_000, Spend())
    writes: list[tuple[Spend, Spend]] = []
    driver = asyncio.create_task(relay(bank, writes))
    lost = node(bank, "lost", 1_000_000)
    reservation = await lost.reserve(CALL)  # a call in flight when the node died
    assert reservation.cost == CALL
    granted = bank.budget.reserved
    assert granted.covers(CALL.times(2))  # a chunk holds room for more than one call
    bank.lost("lost")
    assert bank.budget.spent == granted and bank.budget.reserved == Spend()
    driver.cancel()


async def test_a_call_that_cannot_fit_beside_what_is_spent_is_refused() -> None:
    bank = BudgetBank(None, 1_000, Spend(1, 900, 0, 0.0))  # an earlier session spent 900
    driver = asyncio.create_task(relay(bank, []))
    budget = node(bank, "n", 1_000)
    with pytest.raises(BudgetExceeded):
        await budget.reserve(CALL)
    assert bank.budget.spent.tokens == 900 and bank.budget.reserved == Spend()
    with pytest.raises(BudgetExceeded):  # the node now knows: refused without asking
        budget.check(CALL)
    driver.cancel()
