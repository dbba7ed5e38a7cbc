"""Progress displays and the plan line, driven by the library's callbacks on a fake clock.

The end-to-end tests run the real command: in a pseudo-terminal (rich redraws one line in
place) and with pipes (whole plain lines, never a carriage return).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opro.cli.progress import (
    MEASURE_CALLS,
    PLAIN_INTERVAL_S,
    Board,
    LiveRenderer,
    PlainRenderer,
    renderer_for,
)
from opro.cli.runplan import RunPlan, duration, plan_line, speed_from_limits
from opro.engine.budget import Budget
from opro.engine.evaluate import Progress
from opro.engine.plan import Plan
from opro.engine.spend import Spend
from opro.optimize.loop import StepInfo, StepPhase
from opro.optimize.records import RunTotals, StepRecord
from opro.testing.process import ServerProcess
from opro.testing.terminal import run_in_terminal


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _record(step: int) -> StepRecord:
    """The smallest step record a progress display may be handed."""
    return {"step": step, "candidates": [], "totals": {}}


def snapshot(done: int, total: int, calls: int, **kw: int) -> Progress:
    return Progress(
        done=done,
        total=total,
        calls=calls,
        cache_hits=kw.get("cache_hits", 0),
        errors=kw.get("errors", 0),
        n429=kw.get("n429", 0),
    )


def plain_board(budget: Budget | None = None) -> tuple[Board, io.StringIO, Clock]:
    clock = Clock()
    out = io.StringIO()
    board = Board(budget, PlainRenderer(out), clock=clock)
    board.renderer.start(board)
    return board, out, clock


def test_plain_lines_at_every_tenth_with_rate_cache_hits_cost_budget_and_eta() -> None:
    budget = Budget(max_usd=1.0)
    board, out, clock = plain_board(budget)
    task = board.task("evaluate")
    task.on_progress(snapshot(20, 120, 0, cache_hits=20))  # the cache hits come first
    for done in range(1, 101):
        clock.t += 0.5  # two pairs a second
        budget.spent += Spend(1, 10, 2, 0.001)
        task.on_progress(snapshot(20 + done, 120, done, cache_hits=20, errors=done // 50))
    lines = out.getvalue().splitlines()
    # 100 pairs to make: a line at 20%, 30%, ... of the 120 (20 were cached), 6 s apart.
    assert len(lines) == 9, lines
    assert "\r" not in out.getvalue()
    assert lines[0] == (
        "  evaluate 24/120 pairs | 2.00 calls/s | cache hits 20 | errors 0 | 429s 0 | "
        "tokens 48 | cost $0.0040 | budget left $0.9960 | ETA 48s"
    )
    assert lines[-1].startswith("  evaluate 120/120 pairs") and "ETA" not in lines[-1]


def test_small_evaluations_print_only_every_interval() -> None:
    board, out, clock = plain_board()
    task = board.task("evaluate")
    task.on_progress(snapshot(0, 10, 0))
    for done in range(1, 10):
        clock.t += 1.0
        task.on_progress(snapshot(done, 10, done))
    assert out.getvalue() == ""  # 10 pairs: no 10% lines
    clock.t += PLAIN_INTERVAL_S
    board.tick()  # what the ticker does every second
    assert out.getvalue().splitlines() == [
        "  evaluate 9/10 pairs | 1.00 calls/s | cache hits 0 | errors 0 | 429s 0 | ETA 1s"
    ]
    board.tick()  # nothing new is due until the interval has passed again
    assert len(out.getvalue().splitlines()) == 1


def test_optimize_steps_show_the_optimizer_call_then_scoring_with_step_and_run_eta() -> None:
    board, out, clock = plain_board()
    task = board.task()
    for step in (1, 2):
        task.on_phase(StepPhase(step, 10, "optimizer"))
        clock.t += 30.0
        assert task.line().startswith(f"step {step}/10 optimizer call running 30s")
        task.on_phase(StepPhase(step, 10, "scoring"))
        task.on_progress(snapshot(0, 80, 0))
        for done in range(1, 81):
            clock.t += 0.25
            task.on_progress(snapshot(done, 80, done))
        task.on_step(StepInfo(step, 10, None, RunTotals(), _record(step)))
    # Two steps of 50 s each; 25 s into step 3: its other 25 s and 7 more steps.
    task.on_phase(StepPhase(3, 10, "optimizer"))
    clock.t += 25.0
    assert task.line().endswith("ETA run 6m15s")
    text = out.getvalue()
    assert "step 1/10  best train -  calls 0  cache hits 0  cost $0.0000  errors 0" in text
    assert "  step 2/10 scoring 40/80 pairs | 4.00 calls/s" in text
    assert "40/80 pairs | 4.00 calls/s" in text and "ETA step 10s, run 6m50s" in text


def test_a_new_evaluation_restarts_the_counts_and_the_rate() -> None:
    board, _out, clock = plain_board()
    task = board.task()
    task.on_progress(snapshot(0, 60, 0))
    for done in range(1, 61):
        clock.t += 1.0
        task.on_progress(snapshot(done, 60, done))
    clock.t += 100.0  # no scorer call in between: not part of the next rate
    task.on_progress(snapshot(10, 60, 0, cache_hits=10))  # the next evaluation
    assert task.line() == "10/60 pairs | - calls/s | cache hits 10 | errors 0 | 429s 0"
    for done in range(1, 5):
        clock.t += 0.5
        task.on_progress(snapshot(10 + done, 60, done, cache_hits=10))
    assert task.line().startswith("14/60 pairs | 2.00 calls/s")


def test_several_tasks_show_a_line_each_and_a_totals_line() -> None:
    budget = Budget(max_tokens=1000)
    board, out, _clock = plain_board(budget)
    a, b = board.task("bbh/navigate"), board.task("gsm8k")
    a.on_phase(StepPhase(2, 5, "scoring"))
    a.on_progress(snapshot(3, 10, 3))
    b.on_phase(StepPhase(1, 5, "optimizer"))
    budget.spent += Spend(4, 300, 100, 0.0)
    lines = board.lines()
    assert lines[0].startswith("bbh/navigate step 2/5 scoring 3/10 pairs")
    assert "tokens" not in lines[0]  # the spend is the engine's: on the totals line
    assert lines[1].startswith("gsm8k step 1/5 optimizer call running 0s")
    assert lines[2] == "total: 2 running | tokens 400 | cost $0.0000 | budget left 600 tokens"
    a.on_step(StepInfo(2, 5, None, RunTotals(), _record(2)))
    assert out.getvalue().splitlines()[-1].startswith("bbh/navigate: step 2/5  best train -")
    board.finish(b)
    assert len(board.lines()) == 1


def run_plan(pairs: int, price: float | None = 0.001) -> RunPlan:
    plan = Plan(pairs=pairs, calls=pairs, est_tokens_in=100 * pairs, max_tokens_out=10 * pairs)
    plan.est_cost_usd = None if price is None else price * pairs
    return RunPlan(plan, cached_at_start=True)


def test_the_plan_line_from_limits_counts_the_cache_hits_of_the_first_snapshot() -> None:
    board, out, _clock = plain_board()
    task = board.task("evaluate")
    plan = run_plan(400)
    speed = speed_from_limits(plan.scorer, rpm=60.0, tpm=None)
    task.announce(plan, speed)
    assert out.getvalue() == ""  # the cache hits are not known yet
    task.on_progress(snapshot(100, 400, 0, cache_hits=100))
    assert out.getvalue().splitlines()[0] == (
        "plan: 400 pairs, 300 calls to make (100 cached); expected cost $0.3000; about "
        "5m00s of scorer calls at 1 calls/s (the --rpm/--tpm limit); use --limit to shorten"
    )


def test_the_plan_line_waits_for_a_measured_speed_and_skips_short_runs() -> None:
    board, out, clock = plain_board()
    task = board.task("evaluate")
    task.announce(run_plan(1000, price=None), None)
    task.on_progress(snapshot(0, 1000, 0))
    clock.t += 20.0  # the first call loads the model: not measured
    task.on_progress(snapshot(1, 1000, 1))
    for done in range(2, MEASURE_CALLS + 2):
        clock.t += 0.5
        task.on_progress(snapshot(done, 1000, done))
    [line] = [x for x in out.getvalue().splitlines() if x.startswith("plan")]
    assert line == (
        "plan: 1,000 pairs, 1,000 calls to make (0 cached); expected cost unknown (no "
        "price); about 8m20s of scorer calls at 2 calls/s (measured); use --limit to shorten"
    )
    short, out2, clock2 = plain_board()
    quick = short.task("evaluate")
    quick.announce(run_plan(50), None)
    for done in range(12):
        clock2.t += 0.1
        quick.on_progress(snapshot(done, 50, done))
    assert "plan" not in out2.getvalue()  # 50 calls at 10/s: not a long run


def test_an_optimize_plan_is_an_upper_bound_with_its_own_hint() -> None:
    plan = RunPlan(
        Plan(pairs=8000, cached=40, calls=7960, est_cost_usd=1.5),
        upper_bound=True,
        optimizer_calls=1600,
        optimizer_cost_usd=0.5,
        shorten="--train-fraction / --steps",
    )
    line = plan_line(plan, 2.0, measured=True)
    assert line.startswith("plan (at most): 8,000 pairs, 7,960 calls to make (40 cached)")
    assert "+ 1,600 optimizer answers; expected cost $2.0000; about 1h06m" in line
    assert line.endswith("use --train-fraction / --steps to shorten")
    assert [duration(s) for s in (0.4, 59.6, 61, 3599, 7260)] == [
        "0s",
        "1m00s",
        "1m01s",
        "59m59s",
        "2h01m",
    ]


def test_the_live_renderer_redraws_in_place_and_keeps_logged_lines() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    renderer = renderer_for(stream)
    assert isinstance(renderer, LiveRenderer)
    clock = Clock()
    board = Board(None, renderer, clock=clock)
    renderer.start(board)
    task = board.task("evaluate")
    task.on_progress(snapshot(0, 100, 0))
    for done in range(1, 101):
        clock.t += 0.1
        task.on_progress(snapshot(done, 100, done))
    board.log("a line that stays")
    renderer.stop(board)
    text = stream.getvalue()
    assert "evaluate 50/100 pairs" in text and "a line that stays" in text
    assert "\r\x1b[2K" in text  # the cursor goes back and the line is redrawn
    assert isinstance(renderer_for(io.StringIO()), PlainRenderer)


# ------------------------------------------------------------------ the real command


@pytest.fixture
def slow_server() -> Iterator[ServerProcess]:
    # 40 ms per answer, one call at a time: 100 pairs take at least 4 s, so the plain
    # display has milestones at least 2 s apart to print.
    srv = ServerProcess("--latency", "0.04")
    yield srv
    srv.close()


@pytest.fixture
def task_file(tmp_path: Path) -> Path:
    path = tmp_path / "parity.jsonl"
    rows = [{"input": f"Is {i} odd?", "target": str(i % 2 == 1)} for i in range(100)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def evaluate_args(task_file: Path, server: ServerProcess, tmp_path: Path) -> list[str]:
    return [
        "evaluate", "--task", str(task_file), "--instruction", "Answer.",
        "--scorer", "openai/fake-model", "--scorer-base-url", server.base_url,
        "--max-concurrency", "1", "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip


def test_without_a_terminal_progress_is_plain_periodic_lines(
    slow_server: ServerProcess, task_file: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "opro.cli.main", *evaluate_args(task_file, slow_server, tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) >= 2, result.stderr
    for line in lines:
        assert re.match(r"  evaluate \d+/100 pairs \| [\d.]+ calls/s \| cache hits 0 \|", line)
    assert "pairs=100 calls=100" in result.stdout


def test_in_a_terminal_progress_is_one_line_redrawn(
    slow_server: ServerProcess, task_file: Path, tmp_path: Path
) -> None:
    code, screen = run_in_terminal(evaluate_args(task_file, slow_server, tmp_path))
    assert code == 0, screen
    frames = re.findall(r"evaluate (\d+)/100 pairs", screen)
    assert len(frames) >= 3 and frames[-1] == "100"
    assert "\r\x1b[2K" in screen  # redrawn in place, not one line per update
    assert "calls/s" in screen and "pairs=100 calls=100" in screen


def test_a_long_run_starts_with_its_plan_line(task_file: Path, tmp_path: Path) -> None:
    with ServerProcess() as server:
        args = evaluate_args(task_file, server, tmp_path)
        proc = subprocess.Popen(
            [sys.executable, "-m", "opro.cli.main", *args, "--rpm", "20"],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()  # --rpm 20: 100 calls take 5 minutes
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            if proc.stderr is not None:
                proc.stderr.close()
    assert line.startswith("plan: 100 pairs, 100 calls to make (0 cached); expected cost ")
    assert "about 5m00s of scorer calls at 0.333 calls/s (the --rpm/--tpm limit)" in line
    assert line.rstrip().endswith("use --limit to shorten")
