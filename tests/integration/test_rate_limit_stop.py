"""A server asking for an hours-long pause stops the evaluation instead of freezing it.

Over real HTTP to the fake OpenAI server: one answer asks for a pause far beyond what the
retry policy waits for one call (600 s), either as `Retry-After` on a 429 or as an exhausted
`x-ratelimit-remaining-requests` with a long `x-ratelimit-reset-requests` on a 200. The
connection must not be paused (its limiter's cooldown stays short), nothing more may be
sent, the calls already in flight must land in the cache, and the error is one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import opro
from opro.caches.disk import DiskCache
from opro.engine.engine import Engine
from opro.engine.limits import ConnectionRateLimited
from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig
from opro.testing.process import ServerProcess

EXAMPLES = [opro.Example(f"Is {i} even?", "Yes" if i % 2 == 0 else "No") for i in range(40)]
LONG_RESET = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "99999h"}


class AnyGrader:
    version = "test-1"

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        return True


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer(FakeServerConfig(latency_s=0.05)) as srv:
        yield srv


async def evaluate_until_stopped(server: FakeOpenAIServer, tmp_path: Path) -> str:
    cache_dir = tmp_path / "cache"
    async with Engine(cache_dir=cache_dir) as engine:
        scorer = engine.model(
            "openai/fake-model",
            base_url=server.base_url,
            limits=opro.LimitConfig(max_concurrency=4),
        )
        with pytest.raises(ConnectionRateLimited) as info:
            await engine.evaluate(["Answer."], EXAMPLES, scorer, grader=AnyGrader())
        # Not paused for hours, just stopped; and nothing was sent after the stop.
        assert scorer.limiter.paused_for() <= engine.retry.max_retry_after
        assert scorer.limiter.halted_for is not None
    assert server.accepted >= 1 and server.requests_total < len(EXAMPLES)
    cache = DiskCache(cache_dir)
    try:
        assert len(cache) == server.accepted  # everything the server answered is kept
    finally:
        cache.close()
    return str(info.value)


async def test_a_429_with_retry_after_100000(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.config.retry_after_s = 100000
    server.inject("429")
    message = await evaluate_until_stopped(server, tmp_path)
    assert message.startswith("rate limited for 100000 s by openai at 127.0.0.1:")
    assert "(quota exhausted?)" in message and "\n" not in message
    assert server.requests_total == server.accepted + 1  # the 429 and the calls in flight


async def test_a_200_with_a_reset_of_99999_hours(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.inject_headers(LONG_RESET)
    message = await evaluate_until_stopped(server, tmp_path)
    assert message.startswith(f"rate limited for {99999 * 3600} s by openai at 127.0.0.1:")
    assert server.requests_total == server.accepted  # the long reset came on an answer


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opro.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENAI_API_KEY": "sk-test"},
    )


@pytest.mark.parametrize("how", ["retry-after", "reset-header"])
def test_the_cli_stops_with_one_line_and_keeps_what_was_paid_for(how: str, tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"input": e.input, "target": e.target}) for e in EXAMPLES))
    with ServerProcess("--latency", "0.05", "--retry-after", "100000") as server:
        if how == "retry-after":
            server.inject("429")
        else:
            server.inject_headers(LONG_RESET)
        result = run_cli(
            "evaluate",
            "--task",
            str(data),
            "--instruction",
            "Answer.",
            "--scorer",
            "openai/fake-model",
            "--scorer-base-url",
            server.base_url,
            "--max-concurrency",
            "4",
            "--cache-dir",
            str(tmp_path / "cache"),
        )
        stats = server.stats()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("opro: error: rate limited for ")
    assert "s by openai at 127.0.0.1:" in lines[0] and "(quota exhausted?)" in lines[0]
    assert 1 <= stats["accepted"] < len(EXAMPLES)
    cache = DiskCache(tmp_path / "cache")
    try:
        assert len(cache) == stats["accepted"]
    finally:
        cache.close()
