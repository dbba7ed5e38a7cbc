"""A damaged cache directory: real diskcache files corrupted the ways disks and people do.

An unreadable entry is a miss (logged on `opro.cache`, counted, paid again and rewritten);
an unreadable database is one `CacheError` (an `OproError`) naming the directory and what to
do; a write that fails mid-run keeps the result in memory, so nothing paid for is lost.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import diskcache
import orjson
import pytest

import opro
from opro.caches.disk import CacheError, DiskCache
from opro.engine.engine import Engine
from opro.errors import OproError
from opro.providers.types import Completion, Usage
from opro.testing.fake_openai import FakeOpenAIServer
from opro.testing.process import ServerProcess

EXAMPLES = [opro.Example(f"Is {i} even?", "True" if i % 2 == 0 else "False") for i in range(40)]
INSTRUCTIONS = ["", "Answer True or False."]
PAIRS = len(EXAMPLES) * len(INSTRUCTIONS)
GOOD = {"texts": ["True"], "in": 5, "out": 1, "finish": ["stop"]}

UNPICKLED: list[str] = []


def _record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Trap:
    """Unpickling this calls `_record_unpickling`: proof that a pickle was (not) loaded."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_record_unpickling, ("unpickled",))


# Values a damaged disk, an older tool or a person could leave under a key.
WRONG_SHAPES: list[Any] = [
    orjson.dumps(GOOD)[:20],  # truncated JSON
    b"\x00\xff not json",
    orjson.dumps([1, 2, 3]),
    orjson.dumps({"texts": []}),  # no answer at all: Completion.text would be IndexError
    orjson.dumps({"texts": ["True"]}),  # no token counts: KeyError before
    orjson.dumps({"texts": "True", "in": 1, "out": 1}),  # a string, not a list
    orjson.dumps({"texts": [7], "in": 1, "out": 1}),
    orjson.dumps({"texts": ["True"], "in": -5, "out": 1}),  # would credit the budget
    orjson.dumps({"texts": ["True"], "in": 1.5, "out": 1}),
    orjson.dumps({"texts": ["True"], "in": True, "out": 1}),
    orjson.dumps({"texts": ["True"], "in": 1, "out": 1, "finish": "stop"}),
    "a str value",
    12345,
    {"texts": ["True"], "in": 1, "out": 1},  # diskcache pickles a dict
    Trap(),  # a pickle that would run code if loaded
]


class ExactGrader:
    version = "test-exact"

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        return prediction == example.target


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer() as srv:
        yield srv


async def evaluate(cache_dir: Path, server: FakeOpenAIServer) -> opro.EvalReport:
    async with Engine(cache_dir=cache_dir) as engine:
        scorer = engine.model("openai/fake-model", base_url=server.base_url)
        return await engine.evaluate(INSTRUCTIONS, EXAMPLES, scorer, grader=ExactGrader())


def stored_keys(cache_dir: Path) -> list[str]:
    with diskcache.Cache(str(cache_dir)) as raw:
        return sorted(str(k) for k in raw.iterkeys())


def accuracies(report: opro.EvalReport) -> list[float | None]:
    return [s.accuracy for s in report.instructions]


# The first byte of a b-tree page's header: a leaf page of a table (SQLite file format 1.6).
TABLE_LEAF = 0x0D


def flip_page_of(db: Path, needle: bytes) -> None:
    """Overwrite the header of the table leaf page that stores the row holding `needle`.

    Only a table leaf: a key is also copied into the key index, and when it is the divider
    of two index pages it sits in the index's root, whose damage makes every lookup fail
    (the cache cannot be opened at all). Which key becomes a divider depends on the order
    the concurrent calls finished in, so aiming at the first copy in the file made this
    test fail now and then under load. Table leaves hold whole rows, and no key elsewhere.
    """
    data = db.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    pages = []
    at = data.find(needle)
    while at >= 0:
        if data[at // page_size * page_size] == TABLE_LEAF:  # page 1 starts with "SQLite"
            pages.append(at // page_size)
        at = data.find(needle, at + 1)
    assert len(pages) == 1, f"the row is on one table leaf, found {pages}"
    with db.open("r+b") as f:
        f.seek(pages[0] * page_size)
        f.write(b"\xff" * 8)


async def test_wrong_shaped_values_are_misses_that_are_paid_again_and_rewritten(
    server: FakeOpenAIServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache_dir = tmp_path / "cache"
    clean = await evaluate(cache_dir, server)
    keys = stored_keys(cache_dir)
    assert len(keys) == PAIRS
    with diskcache.Cache(str(cache_dir)) as raw:
        for key, value in zip(keys, WRONG_SHAPES, strict=False):
            raw.set(key, value)
    server.reset_stats()
    with caplog.at_level(logging.WARNING, logger="opro.cache"):
        damaged = await evaluate(cache_dir, server)
    assert accuracies(damaged) == accuracies(clean)
    assert damaged.totals.cache_unreadable == len(WRONG_SHAPES)
    assert damaged.totals.calls == len(WRONG_SHAPES) == server.requests_total
    assert UNPICKLED == []
    assert any(r.name == "opro.cache" and str(cache_dir) in r.getMessage() for r in caplog.records)
    # The fresh answers replaced the damaged values: a third run pays nothing.
    server.reset_stats()
    again = await evaluate(cache_dir, server)
    assert again.totals.calls == 0 and again.totals.cache_unreadable == 0
    assert server.requests_total == 0


def test_a_truncated_value_file_is_a_counted_miss(tmp_path: Path) -> None:
    long = Completion(("x" * 50_000,), Usage(3, 12_500), ("length",))  # stored as a file
    cache = DiskCache(tmp_path)
    cache.set("k", long)
    cache.close()
    [value_file] = [p for p in tmp_path.rglob("*.val")]
    value_file.write_bytes(value_file.read_bytes()[:1000])
    cache = DiskCache(tmp_path)
    assert cache.get("k") is None
    assert cache.stats.unreadable == 1
    cache.close()


@pytest.mark.parametrize("offset", [0, 16, 100])
def test_a_flipped_database_header_is_one_cache_error(tmp_path: Path, offset: int) -> None:
    cache = DiskCache(tmp_path / "c")
    cache.set("k", Completion(("True",), Usage(1, 1)))
    cache.close()
    db = tmp_path / "c" / "cache.db"
    with db.open("r+b") as f:
        f.seek(offset)
        head = f.read(32)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in head))
    with pytest.raises(CacheError) as info:
        Engine(cache_dir=tmp_path / "c")
    assert isinstance(info.value, OproError)
    message = str(info.value)
    assert str(tmp_path / "c") in message and "move it aside" in message
    assert "--no-cache" in message and "\n" not in message


async def test_a_damaged_page_loses_only_its_entries(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    clean = await evaluate(cache_dir, server)
    key = stored_keys(cache_dir)[PAIRS // 2]
    flip_page_of(cache_dir / "cache.db", key.encode())
    server.reset_stats()
    damaged = await evaluate(cache_dir, server)
    assert accuracies(damaged) == accuracies(clean)
    assert 0 < damaged.totals.cache_unreadable < PAIRS
    assert damaged.totals.calls == server.requests_total
    assert damaged.totals.calls + damaged.totals.cache_hits == PAIRS


async def test_a_failing_write_keeps_what_this_run_paid_for(
    server: FakeOpenAIServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A real SQLite failure: the database may not grow by one more page ("disk full"). It is
    # a diskcache setting, so every connection applies it, the writer thread's too.
    DiskCache(tmp_path / "cache").close()
    con = sqlite3.connect(tmp_path / "cache" / "cache.db", isolation_level=None)
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    con.execute("INSERT INTO Settings VALUES ('sqlite_max_page_count', ?)", (pages,))
    con.close()
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        scorer = engine.model("openai/fake-model", base_url=server.base_url)
        with caplog.at_level(logging.WARNING, logger="opro.cache"):
            first = await engine.evaluate(INSTRUCTIONS, EXAMPLES, scorer, grader=ExactGrader())
        assert first.totals.cache_write_errors > 0
        assert first.totals.calls == PAIRS == server.requests_total
        assert all(s.errors == 0 and s.n == len(EXAMPLES) for s in first.instructions)
        assert any("cannot store" in r.getMessage() for r in caplog.records)
        # Within the same process nothing already paid for is paid again.
        second = await engine.evaluate(INSTRUCTIONS, EXAMPLES, scorer, grader=ExactGrader())
        assert server.requests_total == PAIRS
        assert second.totals.cache_hits == PAIRS
        assert accuracies(second) == accuracies(first)


# -- the command line ------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opro.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


@pytest.fixture
def cli_setup(tmp_path: Path) -> Any:
    data = tmp_path / "data.jsonl"
    rows = [{"input": ex.input, "target": ex.target} for ex in EXAMPLES]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ServerProcess() as srv:
        args = ["evaluate", "--task", str(data), "--scorer", "openai/fake-model"]
        args += ["--scorer-base-url", srv.base_url, "--cache-dir", str(tmp_path / "cache")]
        for ins in INSTRUCTIONS:
            args += ["--instruction", ins]
        yield srv, args, tmp_path / "cache"


def test_cli_survives_wrong_shaped_entries(cli_setup: Any, tmp_path: Path) -> None:
    srv, args, cache_dir = cli_setup
    out = tmp_path / "report.json"
    first = run_cli(*args, "--out", str(out))
    assert first.returncode == 0, first.stderr
    clean = json.loads(out.read_text())
    with diskcache.Cache(str(cache_dir)) as raw:
        for key, value in zip(stored_keys(cache_dir), WRONG_SHAPES, strict=False):
            raw.set(key, value)  # loading the Trap's pickle would fail in the CLI process
    srv.reset()
    second = run_cli(*args, "--out", str(out))
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr and str(cache_dir) in second.stderr
    report = json.loads(out.read_text())
    assert report["totals"]["cache_unreadable"] == len(WRONG_SHAPES)
    assert report["totals"]["calls"] == len(WRONG_SHAPES) == srv.stats()["requests_total"]
    assert [e["accuracy"] for e in report["instructions"]] == [
        e["accuracy"] for e in clean["instructions"]
    ]


def test_cli_names_a_damaged_database_in_one_line(cli_setup: Any) -> None:
    srv, args, cache_dir = cli_setup
    assert run_cli(*args).returncode == 0
    db = cache_dir / "cache.db"
    shutil.copy(db, db.with_suffix(".bak"))
    with db.open("r+b") as f:
        f.write(b"this is not SQLite anymore")
    srv.reset()
    result = run_cli(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert str(cache_dir) in line and "move it aside" in line and "--no-cache" in line
    assert srv.stats()["requests_total"] == 0  # refused before anything was paid for


def test_a_write_that_silently_vanishes_is_kept_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A damaged index can accept a row and lose it without an error (seen when fuzzing
    # byte flips); simulated here by a store that drops the value.
    cache = DiskCache(tmp_path)
    monkeypatch.setattr(cache._cache, "set", lambda key, value: True)
    completion = Completion(("True",), Usage(1, 1))
    cache.set("k", completion)
    assert cache.get("k") == completion  # still queued, or kept
    cache.flush()
    assert cache.get("k") == completion
    assert cache.stats.write_errors == 1
    cache.close()
