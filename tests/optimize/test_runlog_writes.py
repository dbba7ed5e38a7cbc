"""The run log's durable writes (one fsync per step, the final files) happen off the event
loop, in order, and a resume says what it replays."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from opro.engine.engine import Engine
from opro.optimize.loop import OptimizeConfig, optimize
from opro.optimize.problem import PromptProblem
from opro.optimize.runlog import RESULTS, STEPS, read_steps
from opro.tasks import load_task

TASK = load_task("synthetic/boolean_expressions", size=40)


async def run(tmp_path: Path, steps: int, *, resume: bool = False) -> None:
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        problem = PromptProblem(engine, engine.model("simulated/scorer"), TASK)
        await optimize(
            problem,
            engine.model("simulated/optimizer"),
            OptimizeConfig(steps=steps, candidates_per_step=2),
            run_dir=tmp_path / "run",
            resume=resume,
        )


async def test_step_and_result_fsyncs_run_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    synced: list[tuple[int, int]] = []  # (inode, thread) of every fsync
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append((os.fstat(fd).st_ino, threading.get_ident()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    await run(tmp_path, steps=3)
    steps = os.stat(tmp_path / "run" / STEPS).st_ino
    results = os.stat(tmp_path / "run" / RESULTS).st_ino
    step_syncs = [thread for inode, thread in synced if inode == steps]
    assert len(step_syncs) == 4  # step 0 (the starting instruction) and 3 steps
    assert loop_thread not in step_syncs
    result_syncs = [thread for inode, thread in synced if inode == results]
    assert result_syncs and loop_thread not in result_syncs
    records, _ = read_steps(tmp_path / "run" / STEPS)
    assert [r["step"] for r in records] == [0, 1, 2, 3]


async def test_resume_logs_what_it_replays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await run(tmp_path, steps=2)
    with caplog.at_level(logging.INFO, logger="opro.optimize"):
        await run(tmp_path, steps=4, resume=True)
    [line] = [r.getMessage() for r in caplog.records if "replaying" in r.getMessage()]
    assert "replaying steps 0-2 from steps.jsonl" in line
    assert "the run goes on at step 3 of 4" in line
