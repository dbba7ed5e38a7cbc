"""`opro optimize --racing` end to end over real HTTP, on the fake server with known accuracies.

The server (`python -m opro.testing.known_accuracy`) plays both models: the optimizer
proposes instructions drawn from the meta-prompt's hash, the scorer answers each question
right with the instruction's known accuracy. Counted on the server: racing pays fewer scorer
calls than the same run without it, and a run killed with SIGKILL in the middle of a racing
step resumes without any prompt being answered twice.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opro.cli.main import main
from opro.testing.known_accuracy import parity_task
from opro.testing.process import ServerProcess


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


VOLATILE = {"wall_s", "calls", "cache_hits", "tokens_in", "tokens_out", "cost_usd", "totals"}


def stable(value: Any) -> Any:
    """A record without what a resumed run pays differently (calls, cache hits, time)."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE | {"info"}}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def wait_for(condition: Callable[[], bool], what: str, tries: int = 3000) -> None:
    """Poll `condition` a bounded number of times (a correctness wait, not a timing test)."""
    for _ in range(tries):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


def run_cli(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "opro.cli.main", *argv], stdout=fh, stderr=subprocess.STDOUT
        )


def stored(cache: Path) -> int:
    """Results in a cache directory, as another process sees them."""
    try:
        with contextlib.closing(sqlite3.connect(cache / "cache.db")) as db:
            return int(db.execute("SELECT COUNT(*) FROM Cache").fetchone()[0])
    except sqlite3.Error:  # not created yet
        return 0


class Server(ServerProcess):
    def __init__(self, *args: str) -> None:
        command = [sys.executable, "-m", "opro.testing.known_accuracy", *args]
        super().__init__(command=command)


def args(task: Path, url: str, run_dir: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "optimize", "--task", str(task),
        "--scorer", "openai/fake-model", "--scorer-base-url", url,
        "--optimizer", "openai/fake-model", "--optimizer-base-url", url,
        "--train-fraction", "0.8", "--test-limit", "10",
        "--steps", "3", "--candidates-per-step", "4", "--max-shown", "4", "--test-top", "1",
        "--run-dir", str(run_dir), "--cache-dir", str(cache),
        *extra,
    ]  # fmt: skip


@pytest.fixture
def task(tmp_path: Path) -> Path:
    return parity_task(tmp_path / "parity.jsonl", 150)  # 120 training examples


def scorer_calls(records: list[dict[str, Any]]) -> int:
    return sum(r["totals"]["calls"] - r.get("optimizer", {}).get("calls", 0) for r in records)


def test_racing_through_the_cli_pays_less_for_the_same_result(
    task: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = Server()
    try:
        assert main(args(task, server.base_url, tmp_path / "full", tmp_path / "c1")) == 0
        full_paid = server.stats()["accepted"]
        server.reset()
        raced = args(task, server.base_url, tmp_path / "raced", tmp_path / "c2", "--racing")
        assert main(raced) == 0
        raced_paid = server.stats()["accepted"]
    finally:
        server.close()
    capsys.readouterr()
    full, fast = lines(tmp_path / "full" / "steps.jsonl"), lines(tmp_path / "raced" / "steps.jsonl")
    stopped = [c for r in fast for c in r["candidates"] if c["status"] == "raced"]
    assert stopped and all(c["graded"] < 120 for c in stopped)
    saved = scorer_calls(full) - scorer_calls(fast)
    assert saved == sum(120 - c["graded"] for c in stopped)  # exactly the unscored examples
    assert full_paid - raced_paid == saved
    assert [r.get("meta_prompt") for r in full] == [r.get("meta_prompt") for r in fast]
    a = json.loads((tmp_path / "full" / "results.json").read_text())
    b = json.loads((tmp_path / "raced" / "results.json").read_text())
    assert a["best"] == b["best"] and a["final"] == b["final"]
    config = json.loads((tmp_path / "raced" / "config.json").read_text())
    assert config["run"]["options"]["racing"] is True
    assert config["run"]["options"]["racing_delta"] == 0.05


def test_sigkill_mid_racing_step_then_resume_pays_nothing_twice(task: Path, tmp_path: Path) -> None:
    # Step 2 races (the history lists 5 by then); hang after 40 of its scorer answers, one
    # call at a time, so no answered request is in flight when the run is killed.
    server = Server("--hang-in-step", "2", "--after", "40")
    try:
        run_dir, cache = tmp_path / "killed", tmp_path / "cache"
        argv = args(task, server.base_url, run_dir, cache, "--racing", "--max-concurrency", "1")
        victim = run_cli(argv, tmp_path / "victim.log")
        wait_for(
            lambda: server.stats()["errors_by_kind"].get("hang") == 1 or victim.poll() is not None,
            "the held request",
        )
        wait_for(lambda: stored(cache) >= server.stats()["accepted"], "the answers stored")
        assert victim.poll() is None, (tmp_path / "victim.log").read_text()
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        assert [r["step"] for r in lines(run_dir / "steps.jsonl")] == [0, 1]
        paid_before = server.stats()["accepted"]
        resumed = run_cli([*argv, "--resume"], tmp_path / "resumed.log")
        assert resumed.wait(timeout=300) == 0, (tmp_path / "resumed.log").read_text()
        counts = server.stats(prompts=True)["prompt_counts"]
        twice = [p for p, c in counts.items() if c > 1]
        assert not twice, f"answered more than once: {twice[:3]}"
        resumed_paid = server.stats()["accepted"] - paid_before
        server.reset()
        straight_args = args(
            task, server.base_url, tmp_path / "straight", tmp_path / "c2", "--racing",
            "--max-concurrency", "1",
        )  # fmt: skip
        straight = run_cli(straight_args, tmp_path / "straight.log")
        assert straight.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()
        straight_paid = server.stats()["accepted"]
    finally:
        server.close()
    killed = lines(run_dir / "steps.jsonl")
    assert any(c["status"] == "raced" for c in killed[2]["candidates"])
    assert stable(killed) == stable(lines(tmp_path / "straight" / "steps.jsonl"))
    a = json.loads((run_dir / "results.json").read_text())
    b = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert stable(a) == stable(b)
    assert paid_before + resumed_paid == straight_paid
    assert 0 < resumed_paid < straight_paid


def test_a_sweep_races_every_task(task: Path, tmp_path: Path) -> None:
    other = parity_task(tmp_path / "parity2.jsonl", 140)
    server = Server()
    try:
        argv = [
            "sweep", "--tasks", str(task), "--tasks", str(other),
            *args(task, server.base_url, tmp_path / "sweep", tmp_path / "c", "--racing")[3:],
        ]  # fmt: skip
        assert main(argv) == 0
    finally:
        server.close()
    record = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert record["settings"]["optimize"]["racing"] is True
    runs = [p.parent for p in (tmp_path / "sweep").glob("*/steps.jsonl")]
    assert len(runs) == 2
    for run in runs:
        records = lines(run / "steps.jsonl")
        assert any(c["status"] == "raced" for r in records for c in r["candidates"])


def test_a_racing_run_stopped_by_its_budget_resumes_to_the_same_result(
    task: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = Server()
    try:
        straight = args(task, server.base_url, tmp_path / "straight", tmp_path / "c1", "--racing")
        assert main(straight) == 0
        spent = json.loads((tmp_path / "straight" / "results.json").read_text())["totals"]
        total = spent["tokens_in"] + spent["tokens_out"]
        server.reset()
        argv = args(task, server.base_url, tmp_path / "run", tmp_path / "c2", "--racing")
        assert main([*argv, "--budget-tokens", str(total // 2)]) == 3
        assert "stopped by the budget" in capsys.readouterr().err
        stopped_at = len(lines(tmp_path / "run" / "steps.jsonl"))
        assert 0 < stopped_at < 4
        assert main([*argv, "--resume", "--budget-tokens", str(10 * total)]) == 0
        counts = server.stats(prompts=True)["prompt_counts"]
    finally:
        server.close()
    assert not [p for p, c in counts.items() if c > 1]  # nothing paid twice
    a = lines(tmp_path / "straight" / "steps.jsonl")
    b = lines(tmp_path / "run" / "steps.jsonl")
    assert stable(a) == stable(b)
    assert any(c["status"] == "raced" for r in b for c in r["candidates"])


def test_a_dry_run_gives_racings_savings_as_a_range(
    task: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "optimize", "--task", str(task), "--scorer", "simulated/a", "--optimizer", "simulated/b",
        "--train-fraction", "0.8", "--steps", "10", "--candidates-per-step", "4", "--dry-run",
    ]  # fmt: skip
    assert main(argv) == 0
    plain = capsys.readouterr().out
    assert "racing" not in plain
    assert main([*argv, "--racing"]) == 0
    out = capsys.readouterr().out
    upper = int(plain.split("scorer (at most): ")[1].split(" pairs")[0])
    # Later candidates (10 steps x 4) stopped at the first look: 16 of 120 examples each.
    low = upper - 10 * 4 * (120 - 16)
    assert f"racing: scorer calls between {low:,} " in out and f"and {upper:,} (none" in out
    assert out.replace(out.splitlines()[2] + "\n", "") == plain  # the upper bound is unchanged
