"""RedisCache against a real redis-server on 127.0.0.1 (`testing/redis_server.py`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from opro.caches.base import encode
from opro.caches.disk import DiskCache
from opro.caches.open import cache_label, open_cache
from opro.providers.types import Completion, Usage

if TYPE_CHECKING:  # redis-py is an optional extra: imported by the fixture, not here
    from opro.testing.redis_server import RedisServer

pytestmark = pytest.mark.requires_extra("redis")

PASSWORD = "hunter2-very-secret"


def completion(i: int) -> Completion:
    return Completion(texts=(f"answer {i}",), usage=Usage(10 + i, i), finish_reasons=("stop",))


def key(i: int) -> str:
    return f"{i:064x}"


class Seen(logging.Handler):
    """Sets an event when a log record containing `text` is emitted (from any thread)."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.event = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if self.text in message:
            self.event.set()


@pytest.fixture
def seen() -> Iterator[Seen]:
    handler = Seen("cannot write to Redis")
    logger = logging.getLogger("opro.cache")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def with_password(server: RedisServer) -> None:
    """Make `server` require PASSWORD (its `url` and `client` then carry it)."""
    server.client().config_set("requirepass", PASSWORD)
    server.password = PASSWORD


def test_hits_misses_and_order_with_the_disk_caches_keys_and_values(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url
    cache = open_cache(url)
    disk = DiskCache(tmp_path / "disk")
    try:
        for i in range(0, 10, 2):
            cache.set(key(i), completion(i))
            disk.set(key(i), completion(i))
        cache.close()  # stored, so the reads below come from Redis, not this process
        disk.flush()
        again = open_cache(url)
        wanted = [key(3), key(4), key(0), key(4), key(9), key(8)]
        assert again.get_many(wanted) == [
            None,
            completion(4),
            completion(0),
            completion(4),
            None,
            completion(8),
        ]
        assert again.get(key(2)) == completion(2) and again.get(key(1)) is None
        assert again.get_many([]) == []
        client = redis_server.client()
        for i in range(0, 10, 2):  # the same bytes as the disk cache stores
            assert (
                client.get("opro:v1:" + key(i)) == disk._cache.get(key(i)) == encode(completion(i))
            )
        again.close()
    finally:
        disk.close()


def test_a_result_is_readable_at_once_and_stored_on_close(redis_server: RedisServer) -> None:
    cache = open_cache(redis_server.url)
    cache.set(key(1), completion(1))
    assert cache.get_many([key(1)]) == [completion(1)]  # from memory or Redis, never a miss
    cache.close()
    client = redis_server.client()
    assert client.get("opro:v1:" + key(1)) == encode(completion(1))


@pytest.mark.parametrize(
    "value",
    [b"not json", b'{"texts": []}', b'{"texts":["a"],"in":1e999,"out":0}', b"[1,2]", b"\xff"],
)
def test_a_corrupt_value_is_a_counted_miss(redis_server: RedisServer, value: bytes) -> None:
    client = redis_server.client()
    client.set("opro:v1:" + key(5), value)
    client.set("opro:v1:" + key(6), encode(completion(6)))
    cache = open_cache(redis_server.url)
    assert cache.get_many([key(5), key(6)]) == [None, completion(6)]
    assert cache.stats.unreadable == 1
    cache.close()


def test_unreachable_at_start_names_the_url_without_its_password() -> None:
    from opro.caches.redis import RedisUnavailable
    from opro.testing.redis_server import free_port

    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable) as info:
        open_cache(url)
    message = str(info.value)
    assert PASSWORD not in message
    assert f"redis://***@127.0.0.1:{url.rsplit(':', 1)[1]}" in message
    assert "--cache-dir" in message and len(message.splitlines()) == 1


def test_a_wrong_password_is_refused_at_start_without_showing_it(
    redis_server: RedisServer,
) -> None:
    from opro.caches.redis import RedisUnavailable

    with_password(redis_server)
    open_cache(redis_server.url).close()  # the right one works
    with pytest.raises(RedisUnavailable) as info:
        open_cache(redis_server.url.replace(PASSWORD, "wrong-password-123"))
    assert "wrong-password-123" not in str(info.value)
    assert cache_label(redis_server.url) == f"redis://***@127.0.0.1:{redis_server.port}/0"


def test_a_restart_mid_run_loses_no_result(redis_server: RedisServer, seen: Seen) -> None:
    server = redis_server
    from opro.caches.redis import RedisCache

    cache = RedisCache(server.url)
    for i in range(50):
        cache.set(key(i), completion(i))
    cache.flush()
    server.stop()
    for i in range(50, 120):
        cache.set(key(i), completion(i))
    assert seen.event.wait(30), seen.messages  # the writer met the outage and retries
    # Reads while Redis is away: this process's own results from memory, the rest misses.
    assert cache.get_many([key(60), key(3)]) == [completion(60), None]
    assert cache.stats.read_errors == 1
    server.start()
    cache.flush()
    assert cache.stats.write_errors == 0
    assert cache.get_many([key(i) for i in range(120)]) == [completion(i) for i in range(120)]
    cache.close()
    client = server.client()
    stored = client.mget(["opro:v1:" + key(i) for i in range(120)])
    assert stored == [encode(completion(i)) for i in range(120)]
    assert any("answers again" in m for m in seen.messages)


def test_close_without_redis_waits_a_bounded_time_and_counts_the_unstored(
    redis_server: RedisServer, seen: Seen
) -> None:
    from opro.caches.redis import RedisCache

    with_password(redis_server)
    cache = RedisCache(redis_server.url, close_wait=0.2)
    redis_server.stop()
    for i in range(7):
        cache.set(key(i), completion(i))
    assert seen.event.wait(30), seen.messages
    cache.close()
    assert cache.stats.write_errors == 7
    assert any("7 results could not be stored" in m for m in seen.messages)
    assert not any(PASSWORD in m for m in seen.messages)


def test_get_many_beyond_one_mget_keeps_the_order(redis_server: RedisServer) -> None:
    from opro.caches.redis import KEYS_PER_MGET

    n = 2 * KEYS_PER_MGET + 100
    redis_server.client().mset({"opro:v1:" + key(i): encode(completion(i)) for i in range(0, n, 2)})
    cache = open_cache(redis_server.url)
    wanted = [key(i) for i in reversed(range(n))]
    assert cache.get_many(wanted) == [
        completion(i) if i % 2 == 0 else None for i in reversed(range(n))
    ]
    cache.close()


EXIT_WITHOUT_CLOSE = """
import logging, sys
from opro.caches.redis import RedisCache
from opro.providers.types import Completion, Usage
logging.basicConfig(level=logging.WARNING)
cache = RedisCache(sys.argv[1], close_wait=0.2)
print("open", flush=True)
sys.stdin.readline()  # the test stops Redis first
cache.set("%064x" % 1, Completion(texts=("x",), usage=Usage(1, 1)))
"""


def test_a_program_that_exits_without_close_while_redis_is_away_still_exits(
    redis_server: RedisServer,
) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", EXIT_WITHOUT_CLOSE, redis_server.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "open\n"
        redis_server.stop()
        _, err = proc.communicate("go\n", timeout=60)  # without the exit hook: retries forever
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "1 results could not be stored in Redis" in err
