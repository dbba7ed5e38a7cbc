"""Cluster-wide rates without Ray: one `LeaseBucket` shared by several nodes'
`LeaseSource`s (the round trip to the limiter actor played by a sleep), on virtual time;
and the hooks through which a connection's limiter takes its rate from such a source."""

from __future__ import annotations

import asyncio

from opro.cluster.leases import LeaseBucket, LeaseSource
from opro.engine.engine import Engine
from opro.engine.leases import CapacitySource
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.testing.virtual_time import run

ROUND_TRIP_S = 0.002


def node(bucket: LeaseBucket) -> LeaseSource:
    async def fetch(requests: int, tokens: int) -> tuple[int, int]:
        await asyncio.sleep(ROUND_TRIP_S)  # to the limiter actor and back
        granted = await bucket.grant(requests, tokens)
        await asyncio.sleep(ROUND_TRIP_S)
        return granted

    return LeaseSource(fetch, bucket.lease_size())


def test_nodes_sharing_a_bucket_stay_within_the_rate() -> None:
    rpm, tpm, calls_per_node, nodes = 6000.0, 300_000.0, 400, 3
    bucket = LeaseBucket(LimitConfig(rpm=rpm, tpm=tpm))
    sent: list[float] = []

    async def main() -> list[LeaseSource]:
        sources = [node(bucket) for _ in range(nodes)]

        async def call(source: LeaseSource) -> None:
            await source.take(200)
            sent.append(asyncio.get_running_loop().time())

        await asyncio.gather(*(call(s) for s in sources for _ in range(calls_per_node)))
        for source in sources:
            await source.aclose()
        return sources

    run(main())
    assert len(sent) == nodes * calls_per_node
    per_s = min(rpm / 60, tpm / 60 / 200)  # tokens bind here: 25 calls/s
    # What the server's one-second bucket allows: a second's burst plus the rate.
    for start in sent:
        assert sum(start <= t < start + 1.0 for t in sent) <= 2 * per_s
    span = max(sent) - min(sent)
    assert (len(sent) - per_s) / span <= per_s  # on average within the rate
    assert (len(sent) - 2 * per_s) / span >= 0.95 * per_s  # and close to it


def test_below_the_rate_a_call_rarely_waits_for_a_round_trip() -> None:
    """Calls arriving at 60% of the limit, spread over three nodes: the next lease is
    asked for before the last one runs out, so almost no call waits for one."""
    rpm, nodes, per_node = 6000.0, 3, 200
    bucket = LeaseBucket(LimitConfig(rpm=rpm))
    gap = nodes / (0.6 * rpm / 60)  # seconds between one node's calls

    async def main() -> list[LeaseSource]:
        sources = [node(bucket) for _ in range(nodes)]

        async def paced(source: LeaseSource) -> None:
            for _ in range(per_node):
                await source.take(0)
                await asyncio.sleep(gap)

        await asyncio.gather(*(paced(s) for s in sources))
        for source in sources:
            await source.aclose()
        return sources

    sources = run(main())
    waited = sum(s.round_trips for s in sources)
    assert waited <= 0.05 * nodes * per_node  # the first lease of each node, about
    assert sum(s.fetches for s in sources) <= 0.5 * nodes * per_node  # leases, not calls


def test_an_unspent_lease_expires_instead_of_bursting_later() -> None:
    bucket = LeaseBucket(LimitConfig(rpm=600.0))  # 10/s, a lease of 1 request

    async def main() -> tuple[int, float]:
        source = LeaseSource(bucket.grant, (5, 0, 0), ttl=0.5)
        await source.take(0)  # holds 4 more
        await asyncio.sleep(10.0)  # idle: they expire
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(4):
            await source.take(0)
        await source.aclose()
        return source.fetches, loop.time() - start

    fetches, _ = run(main())
    assert fetches >= 2  # the held requests were dropped and new ones asked for


class Counting:
    def __init__(self) -> None:
        self.taken: list[int] = []

    async def take(self, tokens: int) -> None:
        self.taken.append(tokens)


def test_a_limiter_with_a_capacity_source_takes_its_rate_from_it() -> None:
    source = Counting()

    async def main() -> float:
        limiter = ConnectionLimiter(LimitConfig(rpm=60, tpm=1000), capacity=source)
        loop = asyncio.get_running_loop()
        for _ in range(10):
            async with limiter.slot(100):
                pass
        return loop.time()

    # Alone, 60/min would space the 10 calls over 9 s; the source grants at once.
    assert run(main()) < 0.5
    assert source.taken == [100] * 10


def test_the_engine_asks_its_capacity_factory_only_for_rate_limited_connections() -> None:
    asked: list[tuple[str, LimitConfig]] = []
    source = Counting()

    def factory(key: str, limits: LimitConfig) -> CapacitySource | None:
        asked.append((key, limits))
        return source

    async def main() -> None:
        async with Engine(use_cache=False, capacity=factory) as engine:
            a = engine.model(
                "openai/m", base_url="http://127.0.0.1:9/v1", limits=LimitConfig(rpm=100)
            )
            engine.model("openai/m", base_url="http://127.0.0.1:8/v1")  # no rate: local
            assert a.limiter.capacity is source

    asyncio.run(main())
    assert [limits.rpm for _, limits in asked] == [100]
