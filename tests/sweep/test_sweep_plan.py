"""`opro sweep --dry-run` plans every task with the estimator of `opro evaluate/optimize`:
a line per task (expected cost with its range, the worst case, where the output came from)
and the sweep's total, without a key, a server or a call."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from opro.cli.main import main


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a dry run opened a connection: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _task(path: Path, n: int) -> Path:
    rows = [{"input": f"Is {i} odd?", "target": str(i % 2 == 1)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _usd(pattern: str, line: str) -> float:
    found = re.search(pattern + r" \$([0-9.]+)", line)
    assert found is not None, line
    return float(found.group(1))


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize("mode", ["evaluate", "optimize"])
def test_the_sweep_dry_run_plans_each_task_and_the_total(
    mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = _task(tmp_path / "a.jsonl", 20), _task(tmp_path / "b.jsonl", 40)
    argv = [
        "sweep", "--tasks", str(a), "--tasks", str(b), "--scorer", "openai/gpt-4o-mini",
        "--optimizer", "openai/gpt-4o-mini", "--steps", "2", "--dry-run",
        "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(tmp_path / "sweep"),
    ]  # fmt: skip
    if mode == "evaluate":
        argv += ["--evaluate-only", "--instruction", "Think step by step.", "--split", "all"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"2 tasks ({mode}):")
    tasks, total = out[1:3], out[3]
    assert [t.split(":")[0].strip() for t in tasks] == [str(a), str(b)]
    for line in tasks:
        assert "expected cost $" in line and "worst case $" in line and "output: " in line
    if mode == "evaluate":
        assert "20 calls to make" in tasks[0] and "40 calls to make" in tasks[1]
        assert "default: chain of thought" in tasks[0]
    assert total.startswith("sweep plan (at most): " if mode == "optimize" else "sweep plan: ")
    expected = sum(_usd("expected cost", t) for t in tasks)
    assert _usd("expected cost", total) == pytest.approx(expected, abs=2e-4)
    assert _usd("worst case", total) > _usd("expected cost", total)
    assert not (tmp_path / "sweep").exists()


def test_calibrate_is_refused_by_a_sweep_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _task(tmp_path / "a.jsonl", 5)
    argv = ["sweep", "--tasks", str(a), "--calibrate", "3", "--no-cache", "--dry-run"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--calibrate" in err[0]
