"""A task's run directory, mirrored from a node's scratch copy to the driver's sweep
directory, with no shared filesystem.

The driver seeds a task's actor with its own copy of the directory (`read_tree`; the
actor writes it with `seed_tree`), so a resumed or restarted task continues from what the
driver holds, whatever node it lands on. While the task runs, the actor's `DirWatcher`
reports what changed since the last look: for an append-only log (`*.jsonl`) the complete
lines added, for any other file its whole content; the driver applies them with
`apply_changes` (appends fsynced, other files replaced atomically). Temporary files
(names starting with ".") are never sent, so a half-written file never reaches the driver.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Change:
    path: str  # relative to the task's directory, "/"-separated
    offset: int | None  # None: the whole file; else append `data` at this offset
    data: bytes


def _files(root: Path) -> list[tuple[str, Path]]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                path = Path(dirpath) / name
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file of `root` (none if it does not exist)."""
    if not root.is_dir():
        return {}
    return {rel: path.read_bytes() for rel, path in _files(root)}


def _safe(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def seed_tree(root: Path, files: dict[str, bytes]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        if not _safe(rel):
            raise ValueError(f"refusing a path outside the run directory: {rel!r}")
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class DirWatcher:
    """What changed under `root` since the last `changes()` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._seen: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) sent
        self._sent: dict[str, int] = {}  # append-only logs: bytes sent
        for rel, path in _files(root) if root.is_dir() else []:
            st = path.stat()
            self._seen[rel] = (st.st_size, st.st_mtime_ns)
            self._sent[rel] = st.st_size

    def changes(self) -> list[Change]:
        if not self.root.is_dir():
            return []
        out = []
        for rel, path in _files(self.root):
            try:
                st = path.stat()
                if self._seen.get(rel) == (st.st_size, st.st_mtime_ns):
                    continue
                data = path.read_bytes()
            except FileNotFoundError:  # replaced or removed between the walk and the read
                continue
            sent = self._sent.get(rel, 0)
            if rel.endswith(".jsonl") and len(data) >= sent:
                end = data.rfind(b"\n") + 1  # complete lines only
                if end > sent:
                    out.append(Change(rel, sent, data[sent:end]))
                    self._sent[rel] = end
                if end == len(data):
                    self._seen[rel] = (st.st_size, st.st_mtime_ns)
                continue
            out.append(Change(rel, None, data))
            self._seen[rel] = (st.st_size, st.st_mtime_ns)
            self._sent[rel] = len(data)
        return out


def apply_changes(root: Path, changes: list[Change]) -> None:
    """Write `changes` under `root`: appends at their offset (fsynced), whole files
    atomically (temporary file, fsync, rename)."""
    for change in changes:
        if not _safe(change.path):
            raise ValueError(f"refusing a path outside the run directory: {change.path!r}")
        path = root / change.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if change.offset is None:
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(change.data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        else:
            mode = "r+b" if path.exists() else "wb"
            with open(path, mode) as fh:
                fh.truncate(change.offset)
                fh.seek(change.offset)
                fh.write(change.data)
                fh.flush()
                os.fsync(fh.fileno())
