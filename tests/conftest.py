"""Shared fixtures: the paper's data directory and a virtual clock for asyncio-throttle."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from asyncio_throttle import throttler


@pytest.fixture
def throttle_on_loop_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make asyncio-throttle read the running loop's clock (it uses time.monotonic)."""
    monkeypatch.setattr(
        throttler, "time", SimpleNamespace(monotonic=lambda: asyncio.get_running_loop().time())
    )
    yield


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The paper's data release: $OPRO_DATA_DIR, else ../shared/data beside the repo."""
    env = os.environ.get("OPRO_DATA_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.fail(f"data directory {path} is missing: set OPRO_DATA_DIR to the paper's data")
    return path
