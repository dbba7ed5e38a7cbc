"""Endpoint pools end to end: real HTTP to fake OpenAI servers, each in its own process.

The servers run in subprocesses so that killing one drops its connections as a crashed
replica would, and restarting it on the same port is a real restart. Nothing here waits on
the clock for ordering: an endpoint is killed from the progress callback after a given
number of pairs, and its return is observed in the server's own counters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

import opro
from opro.caches.disk import DiskCache
from opro.engine.engine import Engine
from opro.engine.evaluate import Progress
from opro.engine.pool import EndpointPool, PoolPolicy
from opro.testing.fake_openai import default_responder
from opro.testing.process import ServerProcess

SPEC = "openai-compatible/fake-model"


class ServedGrader:
    """Right when the answer is the fake server's pure function of the prompt."""

    version = "pool-test-1"

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        return prediction == example.target


def examples(n: int, tag: str) -> list[opro.Example]:
    """Examples whose target is what the fake server answers, so every pair is correct."""
    out = []
    for i in range(n):
        question = f"{tag} question {i}?"
        out.append(opro.Example(question, default_responder(f"{question}")))
    return out


def fast_retry() -> opro.RetryPolicy:
    return opro.RetryPolicy(base_delay=0.01, max_delay=0.05, timeout=10.0)


@pytest.fixture
def servers(request: pytest.FixtureRequest) -> Iterator[list[ServerProcess]]:
    """Fake servers started with the argument lists the test is parametrized with."""
    procs: list[ServerProcess] = []
    try:
        for args in request.param:
            procs.append(ServerProcess(*args))
        yield procs
    finally:
        for proc in procs:
            proc.close()


def pool_of(model: opro.Model) -> EndpointPool:
    assert isinstance(model.limiter, EndpointPool)
    return model.limiter


# Capacity: in-flight limit / latency. B takes three times what A takes.
CAPACITY = {"A": 2, "B": 6}
BALANCE = [
    ["--latency", "0.02", "--max-concurrency", str(CAPACITY[n]), "--retry-after", "0.05"]
    for n in ("A", "B")
]


@pytest.mark.parametrize("servers", [BALANCE], indirect=True)
async def test_calls_are_shared_in_proportion_to_capacity(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    a, b = servers
    async with Engine(cache_dir=tmp_path / "cache", retry=fast_retry()) as engine:
        scorer = engine.model(
            SPEC, base_url=[a.base_url, b.base_url], limits=opro.LimitConfig(max_concurrency=8)
        )
        report = await engine.evaluate(
            [""], examples(600, "balance"), scorer, grader=ServedGrader(), qa_framing=False
        )
    assert report.instructions[0].errors == 0 and report.instructions[0].accuracy == 1.0
    done = [a.stats()["accepted"], b.stats()["accepted"]]
    assert sum(done) == 600
    total = sum(CAPACITY.values())
    for served, capacity in zip(done, CAPACITY.values(), strict=True):
        share, expected = served / 600, capacity / total
        assert abs(share - expected) <= 0.1 * expected, (done, share, expected)
    # Each endpoint's window learnt its own server's limit: AIMD probes one above it and a
    # 429 halves the window, so when the run ends it is anywhere in [limit / 2, limit + 1].
    windows = [e.limiter.concurrency for e in pool_of(scorer).endpoints]
    for window, capacity in zip(windows, CAPACITY.values(), strict=True):
        assert capacity / 2 <= window <= capacity + 1, windows


TWO_SLOW = [["--latency", "0.01"], ["--latency", "0.01"]]


@pytest.mark.parametrize("servers", [TWO_SLOW], indirect=True)
async def test_a_killed_endpoint_loses_nothing_and_a_restarted_one_takes_work_again(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    a, b = servers
    port = b.base_url.rsplit(":", 1)[1].split("/")[0]
    # Probe a dead endpoint often, so its return is seen soon after the restart.
    policy = PoolPolicy(down_base_s=0.01, down_max_s=0.05)
    first = examples(300, "first")

    def kill_b(progress: Progress) -> None:
        if progress.done >= 60 and b.proc.poll() is None:
            b.proc.kill()  # in-flight calls are dropped mid-answer

    cache = DiskCache(tmp_path / "cache")
    async with Engine(cache=cache, retry=fast_retry()) as engine:
        scorer = engine.model(
            SPEC,
            base_url=[a.base_url, b.base_url],
            limits=opro.LimitConfig(max_concurrency=4),
            pool=policy,
        )
        report = await engine.evaluate(
            [""], first, scorer, grader=ServedGrader(), qa_framing=False, on_progress=kill_b
        )
        score = report.instructions[0]
        assert b.proc.poll() is not None, "B was not killed mid-run"
        # Every pair answered and graded right: no failure became a wrong answer.
        assert (score.errors, score.correct, score.n) == (0, 300, 300)
        served_a = a.stats()["accepted"]
        assert served_a < 300  # B answered some before it died
        assert len(cache) == 300  # only answers were stored
        endpoint_b = pool_of(scorer).endpoints[1]
        assert endpoint_b.down_until is not None  # B is out of the pool

        restarted = ServerProcess("--port", port, "--latency", "0.01")
        try:
            assert restarted.base_url == b.base_url
            await asyncio.wait_for(endpoint_b.back.wait(), 30)  # a probe found it answering
            report = await engine.evaluate(
                [""], examples(200, "second"), scorer, grader=ServedGrader(), qa_framing=False
            )
            assert report.instructions[0].errors == 0
            assert report.instructions[0].correct == 200
            back = restarted.stats()["accepted"]
            assert back > 0  # the restarted replica is probed back in and takes work
            assert a.stats()["accepted"] - served_a + back == 200
            assert endpoint_b.down_until is None
        finally:
            restarted.close()


DEAD = [["--latency", "0"], ["--latency", "0"]]


@pytest.mark.parametrize("servers", [DEAD], indirect=True)
async def test_a_pool_with_every_endpoint_down_fails_like_one_dead_server(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    for proc in servers:
        proc.close()
    retry = opro.RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01, timeout=5.0)
    async with Engine(cache_dir=tmp_path / "cache", retry=retry) as engine:
        scorer = engine.model(SPEC, base_url=[p.base_url for p in servers])
        with pytest.raises(opro.ModelCallError) as caught:
            await scorer.generate(scorer.request("hello"))
        assert caught.value.attempts == 3
        assert isinstance(engine.cache, DiskCache) and len(engine.cache) == 0
