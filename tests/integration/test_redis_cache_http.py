"""The shared Redis cache end to end: engines in separate processes share what each paid for,
a Redis restart mid-run loses nothing, an unreachable Redis fails before anything is paid,
and no password reaches an error, a log or a run file. Real redis-server, real HTTP to the
loopback fake OpenAI server, the CLI as a subprocess."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import opro
from opro.engine.engine import Engine
from opro.errors import SettingsError
from opro.testing.fake_openai import FakeOpenAIServer
from opro.testing.process import ServerProcess

if TYPE_CHECKING:  # redis-py is an optional extra: imported by the fixture, not here
    from opro.testing.redis_server import RedisServer

pytestmark = pytest.mark.requires_extra("redis")

PASSWORD = "pa55-word-never-shown"
EXAMPLES = [opro.Example(f"Is {i} even?", "Yes" if i % 2 == 0 else "No") for i in range(12)]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opro.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENAI_API_KEY": "sk-test"},
    )


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess()
    yield srv
    srv.close()


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    rows = [
        {"input": f"Is {i} odd? Answer True or False.", "target": str(i % 2 == 1)}
        for i in range(10)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def evaluate_args(jsonl: Path, server: ServerProcess, cache: str, out: Path) -> list[str]:
    return [
        "evaluate",
        "--task",
        str(jsonl),
        "--instruction",
        "Answer briefly.",
        "--instruction",
        "Think first.",
        "--scorer",
        "openai/fake-model",
        "--scorer-base-url",
        server.base_url,
        "--cache",
        cache,
        "--out",
        str(out),
    ]


def test_a_second_process_pays_nothing_for_what_the_first_paid(
    redis_server: RedisServer, server: ServerProcess, jsonl: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    first = run_cli(*evaluate_args(jsonl, server, redis_server.url, out))
    assert first.returncode == 0, first.stderr
    assert json.loads(out.read_text())["totals"]["calls"] == 20
    assert server.stats()["requests_total"] == 20

    second = run_cli(*evaluate_args(jsonl, server, redis_server.url, out))
    assert second.returncode == 0, second.stderr
    totals = json.loads(out.read_text())["totals"]
    assert totals["calls"] == 0 and totals["cache_hits"] == 20
    assert server.stats()["requests_total"] == 20  # the server saw no new request


def test_unreachable_redis_is_one_line_before_anything_is_paid(
    server: ServerProcess, jsonl: Path, tmp_path: Path
) -> None:
    from opro.testing.redis_server import free_port

    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    result = run_cli(*evaluate_args(jsonl, server, url, tmp_path / "r.json"), "-v")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("opro: error: cannot reach the Redis cache at redis://***@")
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    assert server.stats()["requests_total"] == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cache-dir", "somewhere"], "not allowed with argument"),
        (["--no-cache"], "not allowed with argument"),
    ],
)
def test_cache_conflicts_with_cache_dir_and_no_cache(
    server: ServerProcess, jsonl: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:1/0"
    result = run_cli(*evaluate_args(jsonl, server, url, tmp_path / "r.json"), *extra)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert server.stats()["requests_total"] == 0


def test_an_unsupported_cache_url_is_refused_without_its_password(
    server: ServerProcess, jsonl: Path, tmp_path: Path
) -> None:
    url = f"memcached://user:{PASSWORD}@host/0"
    result = run_cli(*evaluate_args(jsonl, server, url, tmp_path / "r.json"))
    assert result.returncode == 2
    assert "is not a cache this version can use" in result.stderr
    assert PASSWORD not in result.stderr


def test_the_password_reaches_no_run_file_or_log(
    redis_server: RedisServer, server: ServerProcess, jsonl: Path, tmp_path: Path
) -> None:
    redis_server.client().config_set("requirepass", PASSWORD)
    redis_server.password = PASSWORD
    sweep_dir = tmp_path / "sweep"
    log = tmp_path / "opro.log"
    result = run_cli(
        "sweep",
        "--evaluate-only",
        "--tasks",
        str(jsonl),
        "--instruction",
        "Answer briefly.",
        "--scorer",
        "openai/fake-model",
        "--scorer-base-url",
        server.base_url,
        "--cache",
        redis_server.url,
        "--run-dir",
        str(sweep_dir),
        "--log-file",
        str(log),
        "-vv",
    )
    assert result.returncode == 0, result.stderr
    calls = int(re.search(r"calls=(\d+)", result.stdout).group(1))  # type: ignore[union-attr]
    assert redis_server.client().dbsize() == calls > 0  # the sweep used the Redis cache
    texts = [result.stdout, result.stderr, log.read_text()]
    texts += [p.read_text(errors="replace") for p in sweep_dir.rglob("*") if p.is_file()]
    assert not [t for t in texts if PASSWORD in t]
    stored = (sweep_dir / "sweep.json").read_text()
    assert "withheld" in stored and "redis://***@127.0.0.1" in stored
    resumed = run_cli("sweep", "--resume", "--run-dir", str(sweep_dir))
    assert resumed.returncode == 2 and "give --cache again" in resumed.stderr


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer() as srv:
        yield srv


def test_engine_takes_a_cache_spec_but_not_two_caches(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    from opro.caches.redis import RedisCache

    engine = Engine(cache=redis_server.url)
    assert isinstance(engine.cache, RedisCache)
    engine.cache.close()
    with pytest.raises(SettingsError, match="not both"):
        Engine(cache=str(tmp_path / "dir"), cache_dir=tmp_path / "other")


async def test_a_redis_restart_mid_run_loses_no_result(
    redis_server: RedisServer, fake: FakeOpenAIServer
) -> None:
    """Redis is down while the scorer's answers come back: the writes are retried, the
    evaluation finishes, Redis returns, and every answer is in it (a new engine pays 0)."""
    outage = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "cannot write to Redis" in record.getMessage():
                outage.set()

    def restart_once_the_writer_has_failed() -> None:
        if outage.wait(60):
            redis_server.start()

    handler = Watch()
    logging.getLogger("opro.cache").addHandler(handler)
    try:
        async with Engine(cache=redis_server.url) as engine:
            scorer = engine.model("openai/fake-model", base_url=fake.base_url)
            redis_server.stop()
            restarter = threading.Thread(target=restart_once_the_writer_has_failed)
            restarter.start()
            report = await engine.evaluate(["Answer."], EXAMPLES, scorer)
            await asyncio.to_thread(restarter.join)
        assert outage.is_set()
        assert report.totals.calls == 12 and report.totals.cache_write_errors == 0
    finally:
        logging.getLogger("opro.cache").removeHandler(handler)
    calls = fake.stats()["requests_total"]
    async with Engine(cache=redis_server.url) as engine:
        scorer = engine.model("openai/fake-model", base_url=fake.base_url)
        again = await engine.evaluate(["Answer."], EXAMPLES, scorer)
    assert again.totals.calls == 0 and again.totals.cache_hits == 12
    assert fake.stats()["requests_total"] == calls
