"""`--scorer-base-url` repeated: one scorer over a pool of replicas, through `opro evaluate`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opro.testing.process import ServerProcess


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opro.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


@pytest.fixture
def replicas() -> Iterator[list[ServerProcess]]:
    procs = [ServerProcess(), ServerProcess()]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.close()


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    rows = [{"input": f"Is {i} odd?", "target": str(i % 2 == 1)} for i in range(12)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def evaluate_args(jsonl: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "evaluate",
        "--task",
        str(jsonl),
        "--instruction",
        "",
        "--instruction",
        "Answer briefly.",
        "--scorer",
        "openai-compatible/fake-model",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "report.json"),
        *extra,
    ]


def test_a_repeated_base_url_spreads_the_calls_and_keys_ignore_the_replicas(
    replicas: list[ServerProcess], jsonl: Path, tmp_path: Path
) -> None:
    a, b = replicas
    urls = ["--scorer-base-url", a.base_url, "--scorer-base-url", b.base_url]
    first = run_cli(*evaluate_args(jsonl, tmp_path, *urls))
    assert first.returncode == 0, first.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["totals"]["calls"] == 24 and report["totals"]["errors"] == 0
    served = [a.stats()["requests_total"], b.stats()["requests_total"]]
    assert sum(served) == 24 and min(served) > 0  # both replicas answered

    # The same pool named in another order, from a config file: every pair is cached.
    config = tmp_path / "pool.toml"
    config.write_text(f"scorer_base_url = [{json.dumps(b.base_url)}, {json.dumps(a.base_url)}]\n")
    second = run_cli(*evaluate_args(jsonl, tmp_path, "--config", str(config)))
    assert second.returncode == 0, second.stderr
    again = json.loads((tmp_path / "report.json").read_text())
    assert again["totals"]["calls"] == 0 and again["totals"]["cache_hits"] == 24
    assert [e["accuracy"] for e in again["instructions"]] == [
        e["accuracy"] for e in report["instructions"]
    ]
    # A plan keys the pool as the run does: everything is cached, nothing to call.
    plan = run_cli(*evaluate_args(jsonl, tmp_path, *urls, "--dry-run"))
    assert plan.returncode == 0, plan.stderr
    assert "24 cached, 0 calls to make" in plan.stdout


def test_credentials_in_any_url_of_the_pool_are_refused_without_showing_them(
    replicas: list[ServerProcess], jsonl: Path, tmp_path: Path
) -> None:
    a, _ = replicas
    secret_url = "http://me:hunter22@127.0.0.1:9/v1"
    urls = ["--scorer-base-url", a.base_url, "--scorer-base-url", secret_url]
    result = run_cli(*evaluate_args(jsonl, tmp_path, *urls))
    assert result.returncode != 0
    assert "contains credentials" in result.stderr
    assert "hunter22" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert a.stats()["requests_total"] == 0  # refused before anything was sent
