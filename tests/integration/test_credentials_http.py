"""Credentials and query strings in base URLs, over real HTTP to the loopback fake servers.

Userinfo in a base URL is refused with one line that shows no password (it used to reach
aiohttp, which raised a traceback when a key was set too, or printed the password in every
error and report); a query string (Azure's `api-version`) reaches every request; a key
that a server echoes, in any case or partly masked, never reaches a message or a report.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

import opro
from opro.engine.engine import Engine
from opro.engine.evaluate import ErrorPolicy
from opro.testing.fake_anthropic import FakeAnthropicServer
from opro.testing.fake_gemini import FakeGeminiServer
from opro.testing.fake_openai import ECHO_FORMS, FakeOpenAIServer, FakeServerConfig
from opro.testing.process import ServerProcess

KEY = "sk-test-Zq7Wv3Lk9Pp2Rr5Tt8Yy1Uu4Ii6Oo0"
PASSWORD = "hunter2-Pw9xQ"
EXAMPLES = [opro.Example(f"Is {i} even?", "True" if i % 2 == 0 else "False") for i in range(6)]
QUERY = "api-version=2024-06-01"


def with_userinfo(base_url: str) -> str:
    return base_url.replace("http://", f"http://user:{PASSWORD}@")


@pytest.mark.parametrize("spec", ["openai/fake-model", "openai-compatible/fake-model"])
async def test_userinfo_is_refused_before_any_request(spec: str) -> None:
    async with FakeOpenAIServer() as server, Engine(use_cache=False) as engine:
        with pytest.raises(opro.ConfigurationError) as caught:
            engine.model(spec, base_url=with_userinfo(server.base_url), api_key=KEY)
    message = str(caught.value)
    assert PASSWORD not in message and KEY not in message and "\n" not in message
    assert "OPENAI_API_KEY" in message
    assert server.requests_total == 0


async def test_userinfo_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://user:{PASSWORD}@127.0.0.1:9/v1")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://user:{PASSWORD}@127.0.0.1:9")
    monkeypatch.setenv("GEMINI_BASE_URL", f"http://user:{PASSWORD}@127.0.0.1:9")
    async with Engine(use_cache=False) as engine:
        for spec, variable in [
            ("openai/m", "OPENAI_API_KEY"),
            ("anthropic/m", "ANTHROPIC_API_KEY"),
            ("google/m", "GEMINI_API_KEY"),
        ]:
            with pytest.raises(opro.ConfigurationError) as caught:
                engine.model(spec, api_key=KEY)
            assert PASSWORD not in str(caught.value) and variable in str(caught.value)


class EvenGrader:
    version = "test"

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        return prediction == example.target


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_a_query_string_reaches_every_openai_request(api: str) -> None:
    config = FakeServerConfig(required_query={"api-version": "2024-06-01"})
    async with FakeOpenAIServer(config) as server, Engine(use_cache=False) as engine:
        scorer = engine.model("openai/fake-model", base_url=f"{server.base_url}/?{QUERY}", api=api)
        report = await engine.evaluate(["", "Think."], EXAMPLES, scorer, grader=EvenGrader())
    assert report.totals.errors == 0 and report.totals.calls == 2 * len(EXAMPLES)
    assert server.accepted == server.requests_total == 2 * len(EXAMPLES)


@pytest.mark.parametrize("fake", [FakeAnthropicServer, FakeGeminiServer])
async def test_a_query_string_reaches_other_vendors(fake: type[FakeOpenAIServer]) -> None:
    config = FakeServerConfig(required_query={"api-version": "2024-06-01"})
    spec = "anthropic/claude-x" if fake is FakeAnthropicServer else "google/gemini-x"
    async with fake(config) as server, Engine(use_cache=False) as engine:
        scorer = engine.model(spec, base_url=f"{server.base_url}?{QUERY}", api_key=KEY)
        report = await engine.evaluate(["Think."], EXAMPLES, scorer, grader=EvenGrader())
    assert report.totals.errors == 0
    assert server.accepted == server.requests_total == len(EXAMPLES)


@pytest.mark.parametrize("form", sorted(ECHO_FORMS))
async def test_an_echoed_key_never_reaches_the_message(form: str) -> None:
    config = FakeServerConfig(require_api_key="the-right-key", echo_key=form)
    async with FakeOpenAIServer(config) as server, Engine(use_cache=False) as engine:
        scorer = engine.model("openai/fake-model", base_url=server.base_url, api_key=KEY)
        with pytest.raises(opro.EvaluationAborted) as caught:
            await engine.evaluate(["Think."], EXAMPLES, scorer, grader=EvenGrader())
    message = str(caught.value)
    assert "Incorrect API key provided: ***" in message
    assert ECHO_FORMS[form](KEY) not in message and KEY.lower() not in message.lower()


async def test_a_report_never_holds_a_query_key(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on: every pair fails to connect
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    secret = "qsecret-Hh3Jj5Kk7"
    base = f"http://127.0.0.1:{port}/v1?{QUERY}&api_key={secret}"
    retry = opro.RetryPolicy(max_attempts=1, timeout=5.0)
    async with Engine(cache_dir=tmp_path / "cache", retry=retry) as engine:
        scorer = engine.model("openai-compatible/fake-model", base_url=base)
        report = await engine.evaluate(
            ["Think."], EXAMPLES, scorer, grader=EvenGrader(), errors=ErrorPolicy()
        )
    dumped = orjson.dumps(report.to_dict()).decode()
    assert report.totals.errors == len(EXAMPLES)
    assert secret not in dumped and "api_key=***" in dumped and QUERY in dumped
    for path in (tmp_path / "cache").rglob("*"):
        assert not path.is_file() or secret.encode() not in path.read_bytes()


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    rows = [{"input": ex.input, "target": ex.target} for ex in EXAMPLES]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opro.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


@pytest.fixture
async def server() -> AsyncIterator[ServerProcess]:
    srv = ServerProcess("--api-key", "the-right-key", "--echo-key", "stars")
    yield srv
    srv.close()


@pytest.mark.parametrize("spec", ["openai/fake-model", "openai-compatible/fake-model"])
def test_cli_refuses_userinfo_in_one_line(
    spec: str, data: Path, tmp_path: Path, server: ServerProcess
) -> None:
    out = tmp_path / "r.json"
    result = run_cli(
        "evaluate", "--task", str(data), "--instruction", "x", "--scorer", spec,
        "--scorer-base-url", with_userinfo(server.base_url), "--out", str(out),
        "--cache-dir", str(tmp_path / "cache"), OPENAI_API_KEY=KEY,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "credentials" in line and "OPENAI_API_KEY" in line
    assert PASSWORD not in result.stderr + result.stdout and not out.exists()
    assert server.stats()["requests_total"] == 0


def test_cli_scrubs_an_echoed_key_and_keeps_the_query(
    data: Path, tmp_path: Path, server: ServerProcess
) -> None:
    result = run_cli(
        "evaluate", "--task", str(data), "--instruction", "x", "--scorer", "openai/fake-model",
        "--scorer-base-url", f"{server.base_url}?{QUERY}",
        "--cache-dir", str(tmp_path / "cache"), OPENAI_API_KEY=KEY,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "HTTP 401" in line and "Incorrect API key provided: ***" in line and QUERY in line
    assert ECHO_FORMS["stars"](KEY) not in line and KEY[-4:] not in line
