"""open_cache: one spec -> one cache (a directory, the default directory, or a Redis URL)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from opro.caches.disk import CacheError, DiskCache
from opro.caches.open import cache_label, check_cache_spec, is_url, open_cache


def test_none_is_the_default_directory_and_a_path_a_disk_cache_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPRO_CACHE_DIR", str(tmp_path / "default"))
    default = open_cache(None)
    there = open_cache(str(tmp_path / "there"))
    try:
        assert isinstance(default, DiskCache) and default.directory == tmp_path / "default"
        assert isinstance(there, DiskCache) and there.directory == tmp_path / "there"
    finally:
        default.close()
        there.close()


@pytest.mark.parametrize(
    "spec", ["http://:secret-pass@host/0", "memcached://host", "s3://bucket/results"]
)
def test_other_urls_are_refused_not_taken_for_directories(spec: str, tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="not a cache this version can use") as info:
        open_cache(spec)
    assert "secret-pass" not in str(info.value)
    assert not Path(spec).exists()


def test_an_empty_spec_is_refused() -> None:
    with pytest.raises(CacheError, match="empty"):
        check_cache_spec("  ")


def test_a_redis_url_without_redis_py_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opro.caches.redis", None)  # import fails
    with pytest.raises(CacheError, match=r"pip install 'opro-engine\[redis\]'") as info:
        open_cache("redis://:hunter22-secret@localhost:6379/0")
    assert "hunter22-secret" not in str(info.value)


def test_labels_mask_passwords_and_keep_directories() -> None:
    assert cache_label("redis://:pw-12345@h:1/0") == "redis://***@h:1/0"
    assert cache_label("rediss://user:pw-12345@h:1/0") == "rediss://***@h:1/0"
    assert cache_label("redis://h:1/0?password=pw-12345") == "redis://h:1/0?password=***"
    assert cache_label("/some/dir") == "/some/dir" and cache_label(None) is None
    assert is_url("unix:///tmp/redis.sock") and not is_url("C:\\cache")
