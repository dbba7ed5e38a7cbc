"""`--dry-run` needs no key, no server and no model weights, and still counts the cache hits.

It used to build the live providers, so `opro optimize ... --dry-run` refused to run without
OPENAI_API_KEY although it spends nothing and contacts nothing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opro.cli.main import main
from opro.providers import local
from opro.testing.process import ServerProcess

KEYS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "GEMINI_API_KEY",
        "GOOGLE_API_KEY")  # fmt: skip


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key in the environment, and any attempt to open a connection fails the test."""
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a dry run opened a connection: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    rows = [{"input": f"Is {i} odd?", "target": str(i % 2 == 1)} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.usefixtures("offline")
def test_optimize_dry_run_with_vendor_models_and_no_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "optimize", "--task", "bbh/navigate", "--scorer", "openai/gpt-4o-mini",
            "--optimizer", "anthropic/claude-3-5-haiku-latest", "--steps", "3",
            "--budget-usd", "5", "--rpm", "600", "--dry-run",
            "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(tmp_path / "run"),
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    scorer, optimizer, time_line = out.splitlines()
    assert scorer.startswith("scorer (at most): ") and "expected cost $" in scorer
    assert "worst case $" in scorer
    assert optimizer.startswith("optimizer (at most): 24 pairs") and "cost $" in optimizer
    assert time_line.startswith("time: about ") and "(the --rpm/--tpm limit)" in time_line
    assert not (tmp_path / "run").exists()


@pytest.mark.usefixtures("offline")
def test_evaluate_dry_run_with_no_key_and_a_server_that_is_not_running(
    jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "evaluate", "--task", str(jsonl), "--instruction", "A",
            "--scorer", "openai/fake-model", "--scorer-base-url", "http://127.0.0.1:9/v1",
            "--dry-run", "--cache-dir", str(tmp_path / "cache"),
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.splitlines()[0].startswith("12 pairs: 0 cached, 12 calls to make;")
    assert out.splitlines()[1].startswith("time: not known before the first calls")


@pytest.mark.usefixtures("offline")
def test_dry_run_without_the_model_weights(
    jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(local, "EMBEDDED_PACKAGE", "opro_test_no_such_weights_package")
    code = main(
        [
            "optimize", "--task", str(jsonl), "--steps", "2", "--train-fraction", "0.5",
            "--dry-run", "--cache-dir", str(tmp_path / "cache"),
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("scorer (at most): ") and "cache not checked" in out.splitlines()[0]


def test_a_real_run_without_the_weights_is_still_refused(
    jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(local, "EMBEDDED_PACKAGE", "opro_test_no_such_weights_package")
    argv = ["evaluate", "--task", str(jsonl), "--instruction", "A", "--no-cache"]
    assert main(argv) == 2
    assert "the embedded model" in capsys.readouterr().err


def test_a_user_error_in_a_dry_run_is_still_one_line(
    jsonl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--task", str(jsonl), "--instruction", "A", "--dry-run", "--no-cache"]
    assert main([*argv, "--scorer", "nobody/x"]) == 2
    assert "unknown provider 'nobody'" in capsys.readouterr().err
    assert main([*argv, "--scorer", "openai/fake", "--budget-usd", "1"]) == 2
    assert "--price" in capsys.readouterr().err  # a run would refuse an unpriced USD budget


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess()
    yield srv
    srv.close()


def test_the_dry_run_counts_what_a_keyed_run_cached(
    server: ServerProcess, jsonl: Path, tmp_path: Path
) -> None:
    """The plan's cache keys are the live model's although it never saw the key."""
    base = [
        sys.executable, "-m", "opro.cli.main", "evaluate", "--task", str(jsonl),
        "--scorer", "openai/fake-model", "--scorer-base-url", server.base_url,
        "--cache-dir", str(tmp_path / "cache"), "--instruction", "A",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    warm = subprocess.run(
        base, capture_output=True, text=True, timeout=120, env={**env, "OPENAI_API_KEY": "sk-x"}
    )
    assert warm.returncode == 0, warm.stderr
    planned = subprocess.run(
        [*base, "--instruction", "B", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.startswith("24 pairs: 12 cached, 12 calls to make;")
    assert server.stats()["requests_total"] == 12
