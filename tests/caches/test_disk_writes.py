"""The disk cache's write path: a worker thread, read-your-writes, flushing, and a lock
held by another process (a real second process, on the real SQLite file)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import diskcache
import pytest

import opro
from opro.caches.disk import LOCK_ATTEMPTS, LOCK_TIMEOUT_S, DiskCache
from opro.engine.engine import Engine
from opro.providers.types import Completion, Usage
from opro.testing.fake_openai import FakeOpenAIServer

EXAMPLES = [opro.Example(f"Is {i} even?", "True" if i % 2 == 0 else "False") for i in range(30)]
INSTRUCTIONS = ["", "Answer True or False."]
PAIRS = len(EXAMPLES) * len(INSTRUCTIONS)

# Another process in the middle of a long write: it holds the database's write lock until
# it reads a line on stdin. Readers are not blocked (WAL), writers are.
HOLD_LOCK = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
con.execute("COMMIT")
"""


class ExactGrader:
    version = "test-exact"

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        return prediction == example.target


def completion(i: int) -> Completion:
    return Completion((f"answer {i}",), Usage(3, 2), ("stop",))


def stored(directory: Path) -> dict[str, object]:
    """What another process would read from the directory."""
    with diskcache.Cache(str(directory)) as raw:
        return {str(k): raw.get(k) for k in raw.iterkeys() if k != "opro-probe"}


def hold_lock(directory: Path) -> subprocess.Popen[str]:
    """A second process holding the write lock of `directory`'s cache until `release`.

    Open the caches of the test first: opening one writes its settings, which waits.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(directory / "cache.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    if proc.poll() is None:
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=30)
    proc.stdin.close()
    proc.stdout.close()


def test_set_returns_at_once_and_the_worker_thread_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DiskCache(tmp_path)
    writers: set[int] = set()
    real_set = cache._cache.set

    def spy(key: str, value: bytes) -> bool:
        writers.add(threading.get_ident())
        return bool(real_set(key, value))

    monkeypatch.setattr(cache._cache, "set", spy)
    for i in range(50):
        cache.set(f"k{i}", completion(i))
        assert cache.get(f"k{i}") == completion(i)  # readable at once
    cache.flush()
    assert cache.unwritten() == 0 and cache.stats.write_errors == 0
    assert writers and threading.get_ident() not in writers  # never on the caller's thread
    cache.close()
    assert len(stored(tmp_path)) == 50


def test_closing_stores_everything_queued(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    for i in range(300):
        cache.set(f"k{i}", completion(i))
    cache.close()
    again = DiskCache(tmp_path)
    assert all(again.get(f"k{i}") == completion(i) for i in range(300))
    again.close()


def test_a_program_that_never_closes_its_cache_still_stores_it_at_exit(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from opro.caches.disk import DiskCache\n"
        "from opro.providers.types import Completion, Usage\n"
        "cache = DiskCache(sys.argv[1])\n"
        "for i in range(200):\n"
        "    cache.set(f'k{i}', Completion((f'answer {i}',), Usage(3, 2), ('stop',)))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=60)
    cache = DiskCache(tmp_path)
    assert all(cache.get(f"k{i}") == completion(i) for i in range(200))
    cache.close()


def test_the_lock_timeout_is_short() -> None:
    # diskcache's default is 60 s: a run would stall that long behind another process.
    assert LOCK_TIMEOUT_S * LOCK_ATTEMPTS <= 5


async def test_another_process_holding_the_lock_does_not_stall_a_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "cache"
    cache = DiskCache(directory, lock_timeout=0.25)  # the default is 1 s: a faster test
    async with FakeOpenAIServer() as server, Engine(cache=cache) as engine:
        proc = hold_lock(directory)
        try:
            scorer = engine.model("openai/fake-model", base_url=server.base_url)
            with caplog.at_level(logging.WARNING, logger="opro.cache"):
                first = await engine.evaluate(INSTRUCTIONS, EXAMPLES, scorer, grader=ExactGrader())
            # Every result was paid for and graded; none could be stored, all are kept.
            assert first.totals.calls == PAIRS == server.requests_total
            assert first.totals.errors == 0 and first.totals.cache_write_errors == PAIRS
            assert any("another process held its lock" in r.getMessage() for r in caplog.records)
            second = await engine.evaluate(INSTRUCTIONS, EXAMPLES, scorer, grader=ExactGrader())
            assert second.totals.cache_hits == PAIRS and server.requests_total == PAIRS
        finally:
            release(proc)
    assert stored(directory) == {}  # the other process's lock kept every write out


def test_a_lock_released_while_the_writer_waits_loses_nothing(tmp_path: Path) -> None:
    waiting = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "locked by another process" in record.getMessage():
                waiting.set()

    logger = logging.getLogger("opro.cache")
    watch = Watch(logging.DEBUG)
    logger.addHandler(watch)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    cache = DiskCache(tmp_path)
    proc = hold_lock(tmp_path)
    try:
        cache.set("k", completion(1))
        assert waiting.wait(timeout=60), "the writer never met the lock"
        assert cache.unwritten() == 1 and cache.get("k") == completion(1)  # read your writes
    finally:
        release(proc)
        logger.removeHandler(watch)
        logger.setLevel(level)
    cache.flush()
    assert cache.stats.write_errors == 0
    cache.close()
    assert stored(tmp_path) == {"k": b'{"texts":["answer 1"],"in":3,"out":2,"finish":["stop"]}'}
