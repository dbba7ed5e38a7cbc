"""The benchmark scripts still run and measure what they claim (no timing assertions)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "throughput.py"),
            "--instructions",
            "2",
            "--examples",
            "15",
            "--r1-latency",
            "0.02",
            "--r2-latency",
            "0.01",
            "--rpm",
            "1800",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [r["regime"][:2] for r in rows] == ["R1", "R2"]
    for row in rows:
        assert row["pairs"] == row["calls"] == 30 and row["errors"] == 0
        assert row["limit_s"] > 0 and row["ratio_to_limit"] > 0
        assert row["cpu_ms_per_call"] > 0
    assert rows[0]["warm_requests_to_server"] == 0
    assert rows[0]["max_in_flight"] <= 64
    assert "ratio to limit" in result.stdout


def test_recovery_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "recovery.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "recovery.py"),
            "--regime",
            "C",
            "--reference",
            "2",
            "--warmup",
            "1",
            "--after",
            "2",
            "--storm",
            "8",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    [row] = json.loads(out.read_text())
    assert row["regime"].startswith("C") and row["storm"] == 8
    assert row["ceiling_per_s"] > 0 and len(row["seconds_after_storm"]) == 2
    assert row["server_429s"]["429"] == 8  # the storm reached the server
    assert row["server_max_in_flight"] <= 33  # the server's limit, plus the one it refused
    assert "each second after it" in result.stdout


def test_sweep_benchmark_smoke(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "sweep.json"
    args = ["--steps", "1", "--candidates", "2", "--min-examples", "10", "--max-examples", "30"]
    args += ["--test-limit", "2", "--rpm", "30000", "--latency", "0.005", "--jitter", "0"]
    args += ["--scales", "100"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sweep.py"), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OPRO_DATA_DIR": str(data_dir)},
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    row = figures["rate"]
    assert row["complete"] and row["tasks"] == 27
    assert sorted(row["sizes"].values())[0] == 10 and max(row["sizes"].values()) == 30
    assert row["requests"] == row["calls"] > 27  # the client counted what the server saw
    assert row["rate_ratio"] > 0 and row["cpu_ms_per_call"] > 0
    assert row["rss_peak_mb"] >= row["rss_before_mb"] > 0
    assert "rate / limit" in result.stdout
    assert [s["mode"] for s in figures["scales"]] == ["sweep", "plain evaluate"]
    for scale in figures["scales"]:
        assert scale["complete"] and scale["pairs"] == scale["calls"] == 1608  # 1 instruction
        assert scale["cpu_ms_per_pair"] > 0
    assert "CPU vs plain" in result.stdout


def test_warm_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "warm.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "warm.py"),
            "--task",
            "synthetic/arithmetic",
            "--limit",
            "10",
            "--instructions",
            "2",
            "--runs",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [r["answers"] for r in rows] == ["short", "cot"]
    for row in rows:
        assert row["pairs"] == row["warm_cache_hits"] == 20 and row["warm_runs"] == 2
        assert row["warm_calls"] == 0 and row["warm_requests_to_server"] == 0
        assert row["results_per_s_report"] > 0 and row["results_per_s_process"] > 0
        assert row["read_floor_s"] > 0 and row["start_floor_s"] > 0
        assert row["ratio_process_to_floors"] > 0 and row["peak_rss_mb"] > 0
    assert "results/s (wall_s)" in result.stdout


def test_cpu_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "cpu.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "cpu.py"),
            "--task",
            "synthetic/arithmetic",
            "--examples",
            "6",
            "--sizes",
            "1,3",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [(r["cache"], r["pairs"]) for r in rows] == [
        ("disk", 6),
        ("disk", 18),
        ("none", 6),
        ("none", 18),
    ]
    for row in rows:
        assert row["calls"] == row["pairs"] and row["errors"] == 0
        assert math.isfinite(row["engine_ms_per_pair"]) and row["model_ms_per_pair"] > 0
        assert row["peak_rss_mb"] > 0 and row["base_peak_rss_mb"] > 0
    assert "engine CPU ms/pair" in result.stdout


def test_pools_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "pools.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "pools.py"),
            "--sizes",
            "1,2",
            "--pairs",
            "12",
            "--latency",
            "0.02",
            "--capacity",
            "4",
            "--repeats",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [r["endpoints"] for r in rows] == [1, 2]
    for row in rows:
        assert row["errors"] == 0 and row["ratio"] > 0
        assert math.isclose(sum(row["pool_share_per_endpoint"]), 1.0, abs_tol=0.01)
    assert min(rows[1]["pool_share_per_endpoint"]) > 0  # both replicas took calls
    assert "pool / (N x one)" in result.stdout


@pytest.mark.requires_extra("redis")
def test_warm_redis_benchmark_smoke(
    tmp_path: Path, data_dir: Path, program: Callable[[str, str], str]
) -> None:
    program("redis-server", "apt-get install redis-server")
    out = tmp_path / "warm_redis.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "warm_redis.py"),
            "--task",
            "bbh/navigate",
            "--instructions",
            "3",
            "--limit",
            "20",
            "--runs",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OPRO_DATA_DIR": str(data_dir)},
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [r["backend"] for r in rows] == ["redis", "disk"]
    for row in rows:
        assert row["pairs"] == row["warm_cache_hits"] == 60
        assert row["warm_calls"] == 0 and row["warm_requests_to_server"] == 0
        assert row["results_per_s_report"] > 0 and row["read_floor_s"] > 0
    assert "results/s (wall_s)" in result.stdout


def test_racing_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "racing.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "racing.py"), "--seeds", "2", "--steps", "6",
         "--server-seeds", "1", "--server-steps", "0", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = json.loads(out.read_text())
    rows = found["simulated"]["rows"]
    assert [r["seed"] for r in rows] == [0, 1]
    for row in rows:
        # Step 0 scores the empty instruction, then 8 new candidates a step, 200 examples each.
        assert row["full_steps"] == [200] + [8 * 200] * 6
        assert row["racing_pairs"] < row["full_pairs"] and row["raced"] > 0
    assert found["server"]["rows"][0]["full_pairs"] == 200  # step 0 over HTTP
    assert "scorer pairs saved" in result.stdout
