"""Sweeps over real HTTP against the fake OpenAI server: a request-rate limit shared by every
task, a task whose error policy trips, a budget stop resumed with a larger total, and kill -9
mid-sweep resumed by `opro sweep --resume` with no other flag.

This file is also the server for the subprocess test (`python <this file>`): its responder
plays both models. Meta-prompts get bracketed instructions that depend only on how many
earlier instructions the meta-prompt lists; scorer prompts ("[tag] Is N even?") are answered
right or wrong depending on the instruction's words. `--hang-after N` holds the request after
the N-th answered one forever, so the CLI can be killed at a known point with no answered
request left unrecorded (the client sends one request at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from opro.cli.main import main
from opro.engine.budget import Budget
from opro.engine.engine import Engine
from opro.engine.evaluate import ErrorPolicy
from opro.engine.retry import RetryPolicy
from opro.optimize.loop import OptimizeConfig
from opro.sweep import (
    ModelSettings,
    ProblemSettings,
    SweepResult,
    SweepSettings,
    sweep,
)
from opro.testing.fake_openai import (
    FakeOpenAIServer,
    FakeServerConfig,
    json_response,
    serve_until_signalled,
)
from opro.testing.process import ServerProcess

POOL = [
    "Use parity rules.",
    "Think carefully.",
    "Look at the last figure.",
    "Check the parity of the number.",
    "Answer yes or no.",
    "Be brief.",
    "Count in pairs.",
    "Recall what even means.",
]
META_MARK = "Write the text in square brackets."
_QUESTION = re.compile(r"Is (\d+) even\?")


def answer(prompt: str) -> str:
    """The fake models: an optimizer for meta-prompts, a parity scorer for the rest."""
    if META_MARK in prompt:
        k = prompt.count("text:\n")
        return f"[{POOL[(2 * k) % len(POOL)]}] [{POOL[(2 * k + 1) % len(POOL)]}]"
    match = _QUESTION.search(prompt)
    if match is None:
        return "I do not know."
    n = int(match.group(1))
    right = "Yes" if n % 2 == 0 else "No"
    if "parity" in prompt or ("carefully" in prompt and n % 3):
        return f"The answer is {right}."
    return "The answer is Yes."


async def serve(argv: list[str]) -> int:
    """Entry point of the server subprocess; prints READY <base_url> like fake_openai."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--hang-after", type=int, default=None)
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(FakeServerConfig())
    answered = 0

    def responder(prompt: str) -> str:
        nonlocal answered
        answered += 1
        if answered == args.hang_after:
            server.inject("hang", 1)  # the next request is never answered
        return answer(prompt)

    server.config.responder = responder
    return await serve_until_signalled(server)


if __name__ == "__main__":
    sys.exit(asyncio.run(serve(sys.argv[1:])))


# -- tests ---------------------------------------------------------------------------------


def write_task(path: Path, tag: str, n: int) -> Path:
    rows = [
        {"input": f"[{tag}] Is {i} even?", "target": "Yes" if i % 2 == 0 else "No"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def tasks(tmp_path: Path) -> list[str]:
    """Three tasks of different lengths."""
    return [str(write_task(tmp_path / f"{tag}.jsonl", tag, n)) for tag, n in
            (("short", 16), ("medium", 30), ("long", 48))]  # fmt: skip


def chosen(
    tasks: list[str], base_url: str, train_fraction: float = 0.5, **model: Any
) -> SweepSettings:
    role = ModelSettings("openai/fake-model", base_url=base_url, **model)
    return SweepSettings(
        patterns=tuple(tasks),
        scorer=role,
        optimizer=role,
        optimize=OptimizeConfig(steps=2, candidates_per_step=2, test_top=1),
        problem=ProblemSettings(train_fraction=train_fraction, test_limit=4),
        max_parallel_tasks=2,
    )


def served_once(server: FakeOpenAIServer) -> bool:
    return max(server.prompt_counts.values(), default=0) <= 1


async def test_tasks_share_one_rate_limit_without_429s(
    tmp_path: Path, tasks: list[str], data_dir: Path
) -> None:
    """Two paper tasks and a file of our own, under a 3000 requests/minute limit."""
    config = FakeServerConfig(rpm=3000, responder=answer)
    async with FakeOpenAIServer(config) as server:
        papers = ["bbh/navigate", "bbh/snarks"]
        settings = chosen([*papers, tasks[2]], server.base_url, train_fraction=0.1, rpm=3000)
        async with Engine(cache_dir=tmp_path / "cache") as engine:
            result = await sweep(engine, settings, run_dir=tmp_path / "sweep")
        assert result.complete, [(t.task, t.reason) for t in result.tasks]
        assert server.n429 <= 0.01 * server.requests_total
        t = result.totals
        # What the sweep reports is what the server saw and billed.
        assert t.calls == server.requests_total and t.n429 == server.n429
        assert (t.tokens_in, t.tokens_out) == (
            server.billed_prompt_tokens,
            server.billed_completion_tokens,
        )
        assert served_once(server)
        best = json.loads((tmp_path / "sweep" / "long.jsonl" / "results.json").read_text())
        assert best["best"]["score"] == 1.0  # the parity instruction was found
        config_of = json.loads((tmp_path / "sweep" / "bbh__navigate" / "config.json").read_text())
        assert config_of["run"]["problem"]["train"]["n"] == 25  # 10% of the task's 250


class PoisonServer(FakeOpenAIServer):
    """Refuses (400) every request about the "poison" task."""

    async def _complete(self, request: web.Request, chat: bool) -> web.StreamResponse:
        if b"[poison]" in await request.read():
            error = {"message": "refused", "type": "invalid_request_error", "code": None}
            return self._fail("poison", json_response(400, {"error": error}))
        return await super()._complete(request, chat)


async def test_a_task_whose_error_policy_trips_fails_alone(
    tmp_path: Path, tasks: list[str]
) -> None:
    poison = str(write_task(tmp_path / "poison.jsonl", "poison", 60))
    async with PoisonServer(FakeServerConfig(responder=answer)) as server:
        settings = chosen([tasks[0], poison, tasks[1]], server.base_url)
        errors = ErrorPolicy(max_error_rate=0.2)
        settings = replace(settings, problem=replace(settings.problem, errors=errors))
        async with Engine(cache_dir=tmp_path / "cache") as engine:
            result = await sweep(engine, settings, run_dir=tmp_path / "sweep")
    status = {t.task: (t.status, t.reason or "") for t in result.tasks}
    assert status[poison][0] == "failed" and "--max-error-rate" in status[poison][1]
    assert status[tasks[0]] == ("done", "") and status[tasks[1]] == ("done", "")


async def test_a_rejected_key_stops_the_sweep_instead_of_failing_every_task(
    tmp_path: Path, tasks: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-for-this-test")
    config = FakeServerConfig(responder=answer, require_api_key="sk-the-right-key-0123")
    async with FakeOpenAIServer(config) as server:
        settings = replace(chosen(tasks, server.base_url), max_parallel_tasks=1)
        async with Engine(cache_dir=tmp_path / "cache") as engine:
            result = await sweep(engine, settings, run_dir=tmp_path / "sweep")
        # Only the first task's first fan-out (24 pairs) reached the server, then nothing.
        assert 1 <= server.requests_total <= 24
    assert result.stopped == "error"
    first, *rest = sorted(result.tasks, key=lambda t: t.status)
    assert first.status == "failed" and "Incorrect API key" in (first.reason or "")
    assert [t.status for t in rest] == ["pending", "pending"]


async def run_sweep(
    tmp_path: Path, settings: SweepSettings, cache: str, budget: Budget, resume: bool = False
) -> SweepResult:
    retry = RetryPolicy(base_delay=0.001, max_delay=0.01)
    async with Engine(cache_dir=tmp_path / cache, budget=budget, retry=retry) as engine:
        return await sweep(engine, settings, run_dir=tmp_path / f"sweep-{cache}", resume=resume)


async def test_a_budget_stop_resumes_with_a_larger_total_and_pays_nothing_twice(
    tmp_path: Path, tasks: list[str]
) -> None:
    async with FakeOpenAIServer(FakeServerConfig(responder=answer)) as server:
        settings = chosen(tasks, server.base_url, max_tokens=16)
        whole = await run_sweep(tmp_path, settings, "whole", Budget())
        assert whole.complete
        total = server.billed_prompt_tokens + server.billed_completion_tokens
        server.reset_stats()

        cap = total // 2
        stopped = await run_sweep(tmp_path, settings, "capped", Budget(max_tokens=cap))
        billed = server.billed_prompt_tokens + server.billed_completion_tokens
        assert stopped.stopped == "budget" and not stopped.complete
        assert billed <= cap  # the promise
        statuses = [t.status for t in stopped.tasks]
        assert "stopped" in statuses and set(statuses) <= {"done", "stopped", "pending"}
        record = json.loads((tmp_path / "sweep-capped" / "sweep.json").read_text())
        assert [t["status"] for t in record["tasks"]] == statuses
        # No task started after the stop: a pending one never ran.
        assert all(t["started"] is None for t in record["tasks"] if t["status"] == "pending")
        reasons = [t["reason"] for t in record["tasks"] if t["status"] == "stopped"]
        assert all("resume with a higher --budget-tokens" in r for r in reasons)
        assert record["totals"]["tokens_in"] + record["totals"]["tokens_out"] == billed

        more = await run_sweep(tmp_path, settings, "capped", Budget(max_tokens=2 * total), True)
        assert more.complete and more.stopped is None
        billed = server.billed_prompt_tokens + server.billed_completion_tokens
        assert billed <= 2 * total
        assert served_once(server)  # the resumed session re-paid nothing
        record = json.loads((tmp_path / "sweep-capped" / "sweep.json").read_text())
        assert record["totals"]["tokens_in"] + record["totals"]["tokens_out"] == billed
    for name in ("short.jsonl", "medium.jsonl", "long.jsonl"):
        once = json.loads((tmp_path / "sweep-whole" / name / "results.json").read_text())
        resumed = json.loads((tmp_path / "sweep-capped" / name / "results.json").read_text())
        assert resumed["best"] == once["best"] and resumed["final"] == once["final"]


# -- kill -9 through the CLI -----------------------------------------------------------------


class Server(ServerProcess):
    def __init__(self, *args: str) -> None:
        super().__init__(*args, command=[sys.executable, __file__])


def wait_for(condition: Callable[[], bool], what: str, tries: int = 3000) -> None:
    """Poll `condition` a bounded number of times (a correctness wait, not a timing test)."""
    for _ in range(tries):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.fixture
def killable() -> Iterator[Server]:
    server = Server("--hang-after", "150")
    yield server
    server.close()


def sweep_args(tasks: list[str], base_url: str, run_dir: Path, cache: Path) -> list[str]:
    return [
        "sweep", *(a for t in tasks for a in ("--tasks", t)),
        "--scorer", "openai/fake-model", "--scorer-base-url", base_url,
        "--optimizer", "openai/fake-model", "--optimizer-base-url", base_url,
        "--steps", "2", "--candidates-per-step", "2", "--test-top", "1", "--test-limit", "4",
        "--train-fraction", "0.5", "--max-concurrency", "1", "--max-parallel-tasks", "2",
        "--run-dir", str(run_dir), "--cache-dir", str(cache),
    ]  # fmt: skip


def _stored(cache: Path) -> int:
    """Results in a cache directory, as another process sees them."""
    try:
        with contextlib.closing(sqlite3.connect(cache / "cache.db")) as db:
            return int(db.execute("SELECT COUNT(*) FROM Cache").fetchone()[0])
    except sqlite3.Error:  # not created yet
        return 0


def test_kill_9_mid_sweep_then_resume_pays_nothing_twice(
    killable: Server, tasks: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, cache = tmp_path / "killed", tmp_path / "cache"
    log = tmp_path / "victim.log"
    with open(log, "wb") as fh:
        victim = subprocess.Popen(
            [sys.executable, "-m", "opro.cli.main",
             *sweep_args(tasks, killable.base_url, run_dir, cache)],
            stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def held() -> bool:
        return killable.stats()["errors_by_kind"].get("hang") == 1 or victim.poll() is not None

    wait_for(held, "the held request")
    # A kill -9 loses the results still queued for the cache's writer thread (about the last
    # 50 ms; re-paid on resume): kill once the cache holds every answer the server gave.
    wait_for(lambda: _stored(cache) >= killable.stats()["accepted"], "the answers stored")
    assert victim.poll() is None, log.read_text()
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    record = json.loads((run_dir / "sweep.json").read_text())
    assert "running" in {t["status"] for t in record["tasks"]}
    paid = killable.stats()["accepted"]
    assert paid == 150

    # No flag but the directory: the stored options are used.
    assert main(["sweep", "--resume", "--run-dir", str(run_dir)]) == 0, capsys.readouterr().err
    counts = killable.stats(prompts=True)["prompt_counts"]
    twice = [p for p, c in counts.items() if c > 1]
    assert not twice, f"answered more than once: {twice[:3]}"
    record = json.loads((run_dir / "sweep.json").read_text())
    assert {t["status"] for t in record["tasks"]} == {"done"}

    # The same sweep uninterrupted, on its own cache and server, finds the same.
    with Server() as fresh:
        args = sweep_args(tasks, fresh.base_url, tmp_path / "whole", tmp_path / "cache2")
        assert main(args) == 0
        assert fresh.stats()["accepted"] == killable.stats()["accepted"]
    for entry in record["tasks"]:
        a = json.loads((run_dir / entry["dir"] / "results.json").read_text())
        b = json.loads((tmp_path / "whole" / entry["dir"] / "results.json").read_text())
        assert a["best"] == b["best"] and a["final"] == b["final"]
