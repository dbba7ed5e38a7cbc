"""Plan vs bill through the CLI against the loopback fake server (answers whose length
depends on the instruction): `--calibrate N` pays N calls once and the run reuses them, and
the summary compares the plan with what the server billed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opro.testing.process import ServerProcess


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess("--responder", "varied")
    yield srv
    srv.close()


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    rows = [{"input": f"Is {i} odd?", "target": str(i % 2 == 1)} for i in range(30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(
    server: ServerProcess, jsonl: Path, cache: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable, "-m", "opro.cli.main", "evaluate", "--task", str(jsonl),
        "--instruction", "", "--instruction", "Think step by step.",
        "--scorer", "openai/fake-model", "--scorer-base-url", server.base_url,
        "--price", "1,1", "--max-tokens", "256", "--cache-dir", str(cache), *extra,
    ]  # fmt: skip
    env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


def billed_usd(server: ServerProcess) -> float:
    stats = server.stats()
    return float(stats["billed_prompt_tokens"] + stats["billed_completion_tokens"]) / 1e6


def test_calibrate_pays_n_calls_and_the_run_reuses_them(
    server: ServerProcess, jsonl: Path, tmp_path: Path
) -> None:
    done = run(server, jsonl, tmp_path / "cache", "--calibrate", "6")
    assert done.returncode == 0, done.stderr
    # 60 pairs: 6 paid by the calibration, 54 by the run; none paid twice.
    assert server.stats()["requests_total"] == 60
    assert server.stats()["max_answers_per_prompt"] == 1
    [bill] = [line for line in done.stdout.splitlines() if line.startswith("plan vs bill")]
    assert "expected $" in bill and "for 54 calls" in bill
    assert "calibration paid $" in bill and "calibration: 3 answers of the same instruction" in bill


def test_the_summary_compares_plan_and_bill_and_the_cache_makes_it_close(
    server: ServerProcess, jsonl: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = run(server, jsonl, cache, "--limit", "10")  # 20 pairs: evidence for the rest
    assert first.returncode == 0, first.stderr
    server.reset()
    planned = run(server, jsonl, cache, "--dry-run")
    line = planned.stdout.splitlines()[0]
    assert line.startswith("60 pairs: 20 cached, 40 calls to make;")
    assert "cache: 10 answers of the same instruction" in line
    expected = float(re.search(r"expected cost \$([0-9.]+)", line).group(1))  # type: ignore[union-attr]
    worst = float(re.search(r"worst case \$([0-9.]+)", line).group(1))  # type: ignore[union-attr]
    done = run(server, jsonl, cache)
    assert done.returncode == 0, done.stderr
    bill = billed_usd(server)
    assert abs(expected - bill) <= 0.25 * bill  # the target once a cache exists
    assert bill <= worst
    [summary] = [x for x in done.stdout.splitlines() if x.startswith("plan vs bill")]
    assert f"billed ${bill:.4f}" in summary and "worst case $" in summary
