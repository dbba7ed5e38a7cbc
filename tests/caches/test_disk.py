from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from opro.caches.disk import CacheError, DiskCache, default_cache_dir
from opro.providers.types import Completion, Usage


def test_roundtrip_survives_reopening(tmp_path: Path) -> None:
    c = Completion(("True", "False"), Usage(12, 3), ("stop", "length"))
    cache = DiskCache(tmp_path / "c")
    cache.set("k", c)
    cache.close()
    again = DiskCache(tmp_path / "c")
    assert again.get("k") == c
    assert again.get("missing") is None
    assert len(again) == 1
    again.close()


def test_values_are_stored_as_json_not_pickle(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.set("k", Completion(("yes",), Usage(1, 1)))
    cache.close()
    db = sqlite3.connect(tmp_path / "cache.db")
    (value,) = db.execute("SELECT value FROM Cache WHERE key = 'k'").fetchone()
    db.close()
    assert orjson.loads(value) == {"texts": ["yes"], "in": 1, "out": 1, "finish": []}


def test_default_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPRO_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"


def test_an_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CacheError, match="cannot open cache directory"):
        DiskCache(blocker / "cache")
