"""A budget is the run's, and a run's reported spend is what the server billed.

The fake OpenAI server runs in a subprocess (this file is its entry point: `python <this
file>`), with a responder that plays the optimizer for meta-prompts and a parity scorer
for the rest, and with seeded faults. It counts every request and bills every answer it
computes, so a run's reported calls and cost can be compared with the server's own
counters: across budget stops, resumes, 500s and kill -9.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opro.cli import common as cli_common
from opro.cli.main import main
from opro.engine.retry import RetryPolicy
from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig, serve_until_signalled
from opro.testing.process import ServerProcess

PRICE_PER_M = 10.0  # USD per million tokens, in and out, for both models
POOL = [f"Instruction number {i} about parity." for i in range(40)]
_QUESTION = re.compile(r"Is (\d+) even\?")


def answer(prompt: str) -> str:
    """Meta-prompts get two new bracketed instructions; questions a parity answer."""
    if "Write the text in square brackets." in prompt:
        k = prompt.count("text:\n")
        return f"[{POOL[(2 * k) % len(POOL)]}] [{POOL[(2 * k + 1) % len(POOL)]}]"
    match = _QUESTION.search(prompt)
    n = int(match.group(1)) if match else 0
    return "Yes" if n % 2 == 0 or "number 3" in prompt else "No"


async def serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fault", action="append", default=[], metavar="KIND=RATE")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args(argv)
    rates = {k: float(r) for k, _, r in (spec.partition("=") for spec in args.fault)}
    config = FakeServerConfig(responder=answer, fault_rates=rates, latency_s=args.latency)
    server = FakeOpenAIServer(config)
    return await serve_until_signalled(server)


if __name__ == "__main__":
    sys.exit(asyncio.run(serve(sys.argv[1:])))


# -- tests ---------------------------------------------------------------------------------


class Server(ServerProcess):
    def __init__(self, *args: str) -> None:
        super().__init__(*args, command=[sys.executable, __file__])

    def __enter__(self) -> Server:
        return self

    def billed_usd(self) -> float:
        s = self.stats()
        tokens: int = s["billed_prompt_tokens"] + s["billed_completion_tokens"]
        return tokens * PRICE_PER_M / 1e6


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Back off for milliseconds, not seconds, so that 50% 500s take no wall time."""
    fast = functools.partial(RetryPolicy, base_delay=0.001, max_delay=0.005)
    monkeypatch.setattr(cli_common, "RetryPolicy", fast)


@pytest.fixture
def task(tmp_path: Path) -> Path:
    path = tmp_path / "parity.jsonl"
    rows = [{"input": f"Is {i} even?", "target": "Yes" if i % 2 == 0 else "No"} for i in range(90)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as srv:
        yield srv


def optimize_args(task: Path, srv: Server, run_dir: Path, cache: Path, *extra: str) -> list[str]:
    price = f"{PRICE_PER_M:g},{PRICE_PER_M:g}"
    return [
        "optimize", "--task", str(task),
        "--scorer", "openai/fake-model", "--scorer-base-url", srv.base_url, "--price", price,
        "--optimizer", "openai/fake-model", "--optimizer-base-url", srv.base_url,
        "--optimizer-price", price, "--optimizer-max-tokens", "48", "--max-tokens", "8",
        "--train-fraction", "0.4", "--validation-fraction", "0.2", "--eval-every", "2",
        "--steps", "5", "--candidates-per-step", "2", "--max-attempts", "30",
        "--run-dir", str(run_dir), "--cache-dir", str(cache), *extra,
    ]  # fmt: skip


def straight_run_cost(task: Path, srv: Server, tmp_path: Path) -> float:
    """What the whole run bills when nothing stops it (its own run directory and cache)."""
    srv.reset()
    assert main(optimize_args(task, srv, tmp_path / "straight", tmp_path / "straight-cache")) == 0
    cost = srv.billed_usd()
    srv.reset()
    return cost


def steps_cost(run_dir: Path) -> float:
    """What a run's steps cost (without the final table), from its step records."""
    lines = (run_dir / "steps.jsonl").read_text().splitlines()
    return sum(float(json.loads(line)["totals"]["cost_usd"]) for line in lines)


def results(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "results.json").read_text())
    return data


def test_resuming_with_the_same_budget_never_spends_past_it(
    task: Path, server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = straight_run_cost(task, server, tmp_path)
    cap = round(full / 3, 6)
    args = optimize_args(task, server, tmp_path / "run", tmp_path / "cache")
    outcomes = []
    for session in range(4):  # a first session, then three resumes with the same cap
        code = main([*args, "--budget-usd", f"{cap}"] + ["--resume"] * (session > 0))
        outcomes.append((code, capsys.readouterr().err))
        assert server.billed_usd() <= cap, f"session {session} billed past the cap"
    for code, err in outcomes:
        assert code == 3, err
        last = err.splitlines()[-1]
        assert f"of ${cap:g} cap; resume with a higher --budget-usd to continue" in last
        assert "run total $" in last and "Traceback" not in err
    ledger = json.loads((tmp_path / "run" / "spend.json").read_text())
    assert ledger["bound"]["cost_usd"] == pytest.approx(server.billed_usd())
    # A higher total cap finishes the run; its reported cost is the server's whole bill.
    assert main([*args, "--budget-usd", f"{2 * full}", "--resume"]) == 0
    assert results(tmp_path / "run")["totals"]["cost_usd"] == pytest.approx(server.billed_usd())
    assert server.stats()["max_answers_per_prompt"] == 1  # and nothing was paid twice


def test_the_help_says_the_budget_is_the_runs_total(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["optimize", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "the run's TOTAL over all sessions" in out


@pytest.mark.usefixtures("fast_retries")
def test_evaluate_reports_every_paid_call_through_500s_and_a_budget_stop(
    task: Path, tmp_path: Path
) -> None:
    with Server("--fault", "500=0.5") as srv:
        out = tmp_path / "report.json"
        args = [
            "evaluate", "--task", str(task), "--scorer", "openai/fake-model",
            "--scorer-base-url", srv.base_url, "--price", "10,10", "--max-tokens", "8",
            "--instruction", "A", "--instruction", "Think.", "--instruction", "Be brief.",
            "--max-attempts", "30", "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
        ]  # fmt: skip
        assert main([*args, "--budget-usd", "0.0008"]) == 3
        first = json.loads(out.read_text())["totals"]
        assert first["skipped"] > 0 and srv.stats()["errors_by_kind"]["500"] > 0
        assert first["calls"] == srv.stats()["requests_total"]
        assert first["cost_usd"] == pytest.approx(srv.billed_usd())
        srv.reset()
        assert main([*args, "--budget-usd", "1"]) == 0
        second = json.loads(out.read_text())["totals"]
        assert second["skipped"] == 0 and second["cache_hits"] > 0
        assert second["calls"] == srv.stats()["requests_total"]
        assert second["cost_usd"] == pytest.approx(srv.billed_usd())


@pytest.mark.usefixtures("fast_retries")
def test_optimize_reports_every_paid_call_through_500s_stops_and_resumes(
    task: Path, tmp_path: Path
) -> None:
    with Server("--fault", "500=0.5") as srv:
        full = straight_run_cost(task, srv, tmp_path)
        # The last cap runs out half-way through the final table: only scorer calls there,
        # paid in a session that is then stopped, and read from the cache on resume.
        in_final = (
            steps_cost(tmp_path / "straight") + (full - steps_cost(tmp_path / "straight")) / 2
        )
        args = optimize_args(task, srv, tmp_path / "run", tmp_path / "cache")
        codes = [main([*args, "--budget-usd", f"{full / 3:.6f}"])]
        codes.append(main([*args, "--budget-usd", f"{in_final:.6f}", "--resume"]))
        stopped_in_final = not (tmp_path / "run" / "results.json").exists()
        codes.append(main([*args, "--budget-usd", f"{3 * full:.6f}", "--resume"]))
        stats = srv.stats()
        totals = results(tmp_path / "run")["totals"]
        assert stats["errors_by_kind"]["500"] > 0
        assert totals["calls"] == stats["requests_total"]
        assert totals["cost_usd"] == pytest.approx(srv.billed_usd())
        assert totals["tokens_in"] == stats["billed_prompt_tokens"]
        assert totals["tokens_out"] == stats["billed_completion_tokens"]
        assert codes == [3, 3, 0] and stopped_in_final
        steps = [json.loads(x) for x in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
        assert steps[-1]["spend"]["cost_usd"] <= totals["cost_usd"]


@pytest.mark.parametrize("seed", range(2))
def test_kill_9_never_loses_billed_spend_and_resumes_stay_under_the_cap(
    task: Path, tmp_path: Path, seed: int
) -> None:
    """Kill `opro optimize` at seeded random moments: the ledger on disk always covers what
    the server billed, so resumes with the same cap never spend past it."""
    rng = random.Random(seed)
    with Server("--latency", "0.005") as srv:
        full = straight_run_cost(task, srv, tmp_path)
        cap = round(full / 2, 6)
        run_dir = tmp_path / "run"
        args = optimize_args(
            task, srv, run_dir, tmp_path / "cache", "--max-concurrency", "4",
            "--budget-usd", f"{cap}",
        )  # fmt: skip
        cmd = [sys.executable, "-m", "opro.cli.main", *args]
        bills: list[tuple[float, dict[str, Any] | None]] = []
        for session in range(3):
            resume = ["--resume"] if session else []
            victim = subprocess.Popen(
                [*cmd, *resume], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            kill_at = srv.stats()["accepted"] + rng.randint(50, 300)
            for _ in range(4000):  # bounded wait for the kill point, polled not slept-for
                if srv.stats()["accepted"] >= kill_at or victim.poll() is not None:
                    break
                time.sleep(0.005)
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            ledger = run_dir / "spend.json"
            recorded = json.loads(ledger.read_text()) if ledger.exists() else None
            bills.append((srv.billed_usd(), recorded))
        finished = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
        assert finished.returncode in (0, 3), finished.stderr
        assert srv.billed_usd() <= cap
    for billed, recorded in bills:  # what was on disk at each kill covered the bill
        assert billed <= cap and recorded is not None
        assert recorded["bound"]["cost_usd"] >= billed - 1e-12
