"""`opro cache export/import`: disk -> file -> Redis -> file -> disk keeps every value byte for
byte, a re-import changes nothing, a bad line is one error with its number and nothing is
stored, and both directions stream in constant memory."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest

from opro.caches.base import encode
from opro.caches.disk import DiskCache
from opro.caches.transfer import TransferError, export_cache, import_cache
from opro.providers.types import Completion, Usage

if TYPE_CHECKING:  # redis-py is an optional extra: imported by the fixture, not here
    from opro.testing.redis_server import RedisServer


def completion(i: int) -> Completion:
    texts = (f'answer {i} \u00e9\u4e2d "quoted"\n',) if i % 3 else (f"a{i}", f"b{i}")
    finish = ("stop",) if i % 2 else ("length", None)
    return Completion(texts=texts, usage=Usage(i, 2 * i), finish_reasons=finish[: len(texts)])


def key(i: int) -> str:
    return f"{i:064x}"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opro.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )


def disk_with(path: Path, n: int) -> None:
    cache = DiskCache(path)
    for i in range(n):
        cache.set(key(i), completion(i))
    cache.close()


def raw_values(path: Path) -> dict[str, bytes | None]:
    cache = DiskCache(path)
    try:
        return dict(cache.entries())
    finally:
        cache.close()


@pytest.mark.requires_extra("redis")
def test_disk_to_file_to_redis_to_file_to_disk_is_byte_equal(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    disk_with(tmp_path / "src", 300)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    out = run_cli("cache", "export", "--cache", str(tmp_path / "src"), "--out", str(first))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"exported 300 results from {tmp_path / 'src'} to {first}"

    into = run_cli("cache", "import", "--cache", redis_server.url, str(first))
    assert into.returncode == 0, into.stderr
    assert "300 records" in into.stdout and "300 added, 0 replaced, 0 already there" in into.stdout
    client = redis_server.client()
    assert client.get("opro:v1:" + key(7)) == encode(completion(7))

    back = run_cli("cache", "export", "--cache", redis_server.url, "--out", str(second))
    assert back.returncode == 0, back.stderr
    assert sorted(first.read_bytes().splitlines()) == sorted(second.read_bytes().splitlines())

    home = run_cli("cache", "import", "--cache", str(tmp_path / "dst"), str(second))
    assert home.returncode == 0, home.stderr
    assert raw_values(tmp_path / "dst") == raw_values(tmp_path / "src")
    assert len(raw_values(tmp_path / "src")) == 300

    again = run_cli("cache", "import", "--cache", redis_server.url, str(first))
    assert again.returncode == 0, again.stderr
    assert "0 added, 0 replaced, 300 already there" in again.stdout
    assert client.dbsize() == 300


def test_a_reimport_changes_nothing_and_a_changed_value_is_replaced(tmp_path: Path) -> None:
    disk_with(tmp_path / "src", 20)
    dump = tmp_path / "dump.jsonl"
    src = DiskCache(tmp_path / "src")
    assert export_cache(src, dump).records == 20
    src.close()
    dst = DiskCache(tmp_path / "dst")
    dst.set(key(3), completion(99))  # held with another value: replaced
    dst.set(key(4), completion(4))  # held with this value: left alone
    first = import_cache(dst, dump)
    assert (first.records, first.added, first.replaced, first.unchanged) == (20, 18, 1, 1)
    second = import_cache(dst, dump)
    assert (second.added, second.replaced, second.unchanged) == (0, 0, 20)
    assert dst.get(key(3)) == completion(3)
    dst.close()


GOOD = orjson.dumps({"key": key(1), "value": orjson.loads(encode(completion(1)))}).decode()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"key": "' + key(2) + '", "value": {"texts": ["x"], "in": NaN, "out": 0}}', "not a JSON"),
        ('{"key": "' + key(2) + '", "value": {"texts": ["x"], "in": Infinity, "out": 0}}', "JSON"),
        ('{"key": "' + key(2) + '", "value": {"texts": ["x"], "in": 1e999, "out": 0}}', "JSON"),
        ('{"key": "' + key(2) + '", "value": {"texts": ["x"], "in": 1.5, "out": 0}}', "token"),
        ('{"key": "' + key(2) + '", "value": {"texts": ["x"], "in": -1, "out": 0}}', "token"),
        (
            '{"key": "'
            + key(2)
            + '", "value": {"texts": ["x"], "in": 1, "out": 99999999999999999999}}',
            "token",
        ),
        ('{"key": "' + key(2) + '", "value": {"texts": [], "in": 1, "out": 0}}', "texts"),
        ('{"key": "' + key(2) + '", "value": {"texts": [3], "in": 1, "out": 0}}', "texts"),
        ('{"key": "NOT-HEX", "value": {"texts": ["x"], "in": 1, "out": 0}}', "cache key"),
        ('{"key": "' + key(2) + '"}', '"key"'),
        ('{"key": "' + key(2) + '", "value": {"texts": ["x"], "in": 1, "out": 0}, "x": 1}', "key"),
        ('{"key": "' + key(2) + '", "value": {"texts": ["x"', "not a JSON"),
        ("[1, 2]", '"key"'),
    ],
)
def test_a_bad_line_is_one_error_with_its_number_and_nothing_is_stored(
    tmp_path: Path, line: str, message: str
) -> None:
    dump = tmp_path / "dump.jsonl"
    dump.write_text(f"{GOOD}\n\n{GOOD}\n{line}\n{GOOD}\n")
    result = run_cli("cache", "import", "--cache", str(tmp_path / "dst"), str(dump))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"{dump}:4: " in lines[0] and message in lines[0], lines[0]
    assert "import again" in lines[0]
    assert raw_values(tmp_path / "dst") == {}  # nothing half-written


def test_export_of_a_missing_cache_and_import_of_a_missing_file_are_one_line(
    tmp_path: Path,
) -> None:
    missing = run_cli("cache", "export", "--cache", str(tmp_path / "none"), "--out", "x.jsonl")
    assert missing.returncode == 2 and "there is no cache in" in missing.stderr
    nofile = run_cli("cache", "import", "--cache", str(tmp_path / "c"), str(tmp_path / "no"))
    assert nofile.returncode == 2 and "is not a file" in nofile.stderr


def test_export_skips_unreadable_entries_and_never_leaves_half_a_file(tmp_path: Path) -> None:
    disk_with(tmp_path / "src", 5)
    cache = DiskCache(tmp_path / "src")
    cache._cache.set(key(9), b"{damaged")  # written by something else, not a record
    out = tmp_path / "dump.jsonl"
    done = export_cache(cache, out)
    assert (done.records, done.skipped) == (5, 1)
    assert len(out.read_bytes().splitlines()) == 5
    with pytest.raises(TransferError, match="cannot write"):
        export_cache(cache, tmp_path / "no-such-dir" / "dump.jsonl")
    assert not list((tmp_path).glob("**/*.part"))
    cache.close()


def write_dump(path: Path, n: int) -> None:
    with path.open("wb") as f:
        for i in range(n):
            value = encode(Completion(texts=(f"answer {i}",), usage=Usage(i, 1)))
            f.write(b'{"key":"' + key(i).encode() + b'","value":' + value + b"}\n")


@pytest.mark.requires_extra("redis")
def test_import_and_export_stream_in_constant_memory(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Five times the records, not five times the memory: both directions hold at most a
    batch, so the peak of Python allocations hardly grows with the file (measured with
    100,000 records too: the same peaks; tracing makes that size too slow for a test)."""
    from opro.caches.redis import RedisCache

    peaks = []
    for n in (2_000, 10_000):
        redis_server.client().flushall()
        dump, back = tmp_path / f"dump{n}.jsonl", tmp_path / f"back{n}.jsonl"
        write_dump(dump, n)
        cache = RedisCache(redis_server.url)
        try:
            tracemalloc.start()
            got = import_cache(cache, dump)
            import_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            done = export_cache(cache, back)
            export_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            cache.close()
        assert (got.records, got.added, done.records) == (n, n, n)
        assert back.stat().st_size == dump.stat().st_size
        peaks.append((import_peak, export_peak))
    (import_small, export_small), (import_large, export_large) = peaks
    assert import_large < 1.5 * import_small, peaks
    assert export_large < 1.5 * export_small, peaks
