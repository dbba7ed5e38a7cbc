"""A run directory mirrored from a node's scratch copy to the driver's, piece by piece."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opro.cluster.files import Change, DirWatcher, apply_changes, read_tree, seed_tree


def touch(path: Path, data: bytes, mode: str = "wb") -> None:
    with open(path, mode) as fh:
        fh.write(data)
    st = path.stat()  # a distinct mtime even within the clock's resolution
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_the_driver_copy_follows_appends_and_replacements(tmp_path: Path) -> None:
    driver, node = tmp_path / "driver", tmp_path / "node"
    driver.mkdir()
    (driver / "config.json").write_bytes(b'{"a": 1}')
    (driver / "steps.jsonl").write_bytes(b'{"step": 0}\n')
    seed_tree(node, read_tree(driver))  # a resumed task starts from the driver's copy
    watcher = DirWatcher(node)
    assert watcher.changes() == []  # the seed is not sent back

    touch(node / "steps.jsonl", b'{"step": 1}\n{"st', "ab")  # a line and a half
    changes = watcher.changes()
    assert changes == [Change("steps.jsonl", 12, b'{"step": 1}\n')]  # whole lines only
    apply_changes(driver, changes)
    touch(node / "steps.jsonl", b'ep": 2}\n', "ab")
    touch(node / "results.json", b"{}")
    (node / ".results.json.tmp").write_bytes(b"half")  # never sent
    apply_changes(driver, watcher.changes())
    assert read_tree(driver) == read_tree(node)

    touch(node / "steps.jsonl", b'{"step": 0}\n')  # cut back (a torn tail dropped)
    apply_changes(driver, watcher.changes())
    assert read_tree(driver) == read_tree(node)


def test_paths_leading_out_of_the_run_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside"):
        apply_changes(tmp_path, [Change("../x", None, b"")])
    with pytest.raises(ValueError, match="outside"):
        seed_tree(tmp_path / "run", {"/etc/x": b""})
