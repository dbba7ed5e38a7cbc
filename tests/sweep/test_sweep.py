"""`opro.sweep` on the simulated provider: many paper tasks under one engine, sweep.json,
per-task run directories that `opro optimize --resume` accepts, the evaluate-only mode,
failures that stay with their task, and resume checks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import opro
from opro.cli.main import main
from opro.engine.budget import Budget
from opro.engine.engine import Engine
from opro.optimize.loop import OptimizeConfig
from opro.providers.errors import ConfigurationError
from opro.sweep import (
    EvaluateOnly,
    ModelSettings,
    ProblemSettings,
    SweepError,
    SweepEvent,
    SweepProgress,
    SweepResult,
    SweepSettings,
    TaskFinished,
    TaskStarted,
    TaskStep,
    sweep,
)

TASKS = ("bbh/navigate", "bbh/snarks", "bbh/word_sorting")
CONFIG = OptimizeConfig(steps=1, candidates_per_step=2, test_top=1)


def settings(*patterns: str, **overrides: Any) -> SweepSettings:
    base: dict[str, Any] = {
        "patterns": patterns or TASKS,
        "scorer": ModelSettings("simulated/s"),
        "optimizer": ModelSettings("simulated/o"),
        "optimize": CONFIG,
        "problem": ProblemSettings(test_limit=5),
        "max_parallel_tasks": 2,
    }
    return SweepSettings(**{**base, **overrides})


def read(path: Path) -> Any:
    return json.loads(path.read_text())


async def test_a_sweep_over_paper_tasks_under_one_engine(tmp_path: Path, data_dir: Path) -> None:
    events: list[SweepEvent] = []
    run_dir = tmp_path / "sweep"
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        result = await opro.sweep(
            engine, settings(), run_dir=run_dir, on_event=events.append, info={"who": "test"}
        )
        models = {id(m) for m in engine._models}
    assert result.complete and result.stopped is None
    assert len(models) == 2  # one scorer and one optimizer, shared by every task
    record = read(run_dir / "sweep.json")
    assert set(record) == {"version", "mode", "settings", "tasks", "totals", "info"}
    assert record["version"] == 1 and record["mode"] == "optimize"
    assert [t["task"] for t in record["tasks"]] == list(TASKS)
    for entry in record["tasks"]:
        assert set(entry) == {"task", "dir", "status", "reason", "started", "finished"}
        assert entry["status"] == "done" and entry["reason"] is None
        assert entry["started"] <= entry["finished"]
        run = run_dir / entry["dir"]
        assert {p.name for p in run.iterdir()} >= {"config.json", "steps.jsonl", "results.json"}
        assert len((run / "steps.jsonl").read_text().splitlines()) == 2  # steps 0 and 1
    assert set(record["totals"]) == {
        "calls", "cache_hits", "n429", "tokens_in", "tokens_out", "cost_usd", "wall_s",
    }  # fmt: skip
    assert record["settings"]["optimize"]["steps"] == 1
    assert record["settings"]["scorer"]["spec"] == "simulated/s"
    assert record["info"] == {"who": "test"}
    # The sweep's totals are its runs' totals: one engine, nothing uncounted.
    runs = [read(run_dir / e["dir"] / "results.json")["totals"] for e in record["tasks"]]
    for name in ("calls", "tokens_in", "tokens_out"):
        assert record["totals"][name] == sum(r[name] for r in runs) > 0
    assert read(run_dir / "spend.json")["settled"]["calls"] == record["totals"]["calls"]
    # Events: each task started, stepped and finished; the last snapshot is final.
    started = [e.task for e in events if isinstance(e, TaskStarted)]
    finished = [(e.task, e.status) for e in events if isinstance(e, TaskFinished)]
    assert sorted(started) == sorted(TASKS)
    assert sorted(finished) == sorted((t, "done") for t in TASKS)
    assert {e.task for e in events if isinstance(e, TaskStep)} == set(TASKS)
    last = events[-1]
    assert isinstance(last, SweepProgress) and last.final and last.counts == {"done": 3}
    assert last.totals.calls == record["totals"]["calls"]


def test_each_task_directory_is_an_optimize_run_directory(tmp_path: Path, data_dir: Path) -> None:
    """`opro optimize --resume` accepts a task's directory and pays nothing more."""
    run_dir, cache = tmp_path / "sweep", tmp_path / "cache"
    common = [
        "--scorer", "simulated/s", "--optimizer", "simulated/o", "--steps", "1",
        "--candidates-per-step", "2", "--test-top", "1", "--test-limit", "5",
        "--cache-dir", str(cache), "--data-dir", str(data_dir),
    ]  # fmt: skip
    assert main(["sweep", "--tasks", "bbh/navigate", "--run-dir", str(run_dir), *common]) == 0
    task_dir = run_dir / "bbh__navigate"
    before = read(task_dir / "results.json")
    code = main(
        ["optimize", "--task", "bbh/navigate", "--resume", "--run-dir", str(task_dir), *common]
    )
    assert code == 0
    after = read(task_dir / "results.json")
    assert after["best"] == before["best"] and after["final"] == before["final"]
    # Nothing paid again: the resumed session's final table came from the cache, so the
    # run's calls are exactly those its logged steps made.
    steps = [json.loads(line) for line in (task_dir / "steps.jsonl").read_text().splitlines()]
    assert after["totals"]["calls"] == sum(s["totals"]["calls"] for s in steps)
    assert before["totals"]["calls"] > after["totals"]["calls"]  # the first final was paid


def test_evaluate_only_writes_what_opro_evaluate_writes(tmp_path: Path, data_dir: Path) -> None:
    instructions = ("", "Let's think step by step.")
    chosen = settings(
        "bbh/navigate",
        "bbh/snarks",
        optimizer=None,
        optimize=None,
        evaluate=EvaluateOnly(instructions, split="test"),
        problem=ProblemSettings(test_limit=10),
    )

    async def run() -> SweepResult:
        async with Engine(cache_dir=tmp_path / "cache") as engine:
            return await sweep(engine, chosen, run_dir=tmp_path / "sweep")

    result = asyncio.run(run())
    assert result.complete and result.mode == "evaluate"
    assert read(tmp_path / "sweep" / "sweep.json")["mode"] == "evaluate"
    for task in ("bbh/navigate", "bbh/snarks"):
        out = tmp_path / f"{task.replace('/', '_')}.json"
        args = ["evaluate", "--task", task, "--split", "test", "--limit", "10"]
        args += ["--scorer", "simulated/s", "--no-cache", "--out", str(out)]
        for ins in instructions:
            args += ["--instruction", ins]
        assert main(args) == 0
        expected, got = (
            read(out),
            read(tmp_path / "sweep" / task.replace("/", "__") / "report.json"),
        )
        assert set(got) == set(expected)
        assert got["protocol"] == expected["protocol"] == "ours"
        for mine, theirs in zip(got["instructions"], expected["instructions"], strict=True):
            for key in ("instruction", "accuracy", "correct", "n", "errors", "accuracy_reference"):
                assert mine[key] == theirs[key]


async def test_a_failing_task_is_recorded_and_the_others_go_on(
    tmp_path: Path, data_dir: Path
) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"input": "Is 2 even?", "target": "Yes"}\n{"input": \n')
    chosen = settings("bbh/navigate", str(broken), "multiarith", "bbh/snarks")
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        result = await sweep(engine, chosen, run_dir=tmp_path / "sweep")
    status = {t.task: (t.status, t.reason) for t in result.tasks}
    assert status["bbh/navigate"] == ("done", None) and status["bbh/snarks"] == ("done", None)
    assert status[str(broken)][0] == "failed" and "line 2" in (status[str(broken)][1] or "")
    assert status["multiarith"] == ("failed", "task multiarith has no training examples to "
                                    "optimize on")  # fmt: skip
    record = read(tmp_path / "sweep" / "sweep.json")
    assert [t["status"] for t in record["tasks"]] == ["done", "failed", "failed", "done"]
    assert not result.complete and result.stopped is None


async def test_resume_refuses_a_result_changing_setting_and_a_fresh_sweep_refuses_an_old_one(
    tmp_path: Path, data_dir: Path
) -> None:
    run_dir = tmp_path / "sweep"
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        await sweep(engine, settings("bbh/navigate"), run_dir=run_dir)
    changed = settings("bbh/navigate", problem=ProblemSettings(test_limit=5, position="Q_end"))
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        with pytest.raises(SweepError, match=r"problem\.position was 'Q_begin' there"):
            await sweep(engine, changed, run_dir=run_dir, resume=True)
        with pytest.raises(SweepError, match="already holds a sweep; pass --resume"):
            await sweep(engine, settings("bbh/navigate"), run_dir=run_dir)
        # Operational settings may change, and empty patterns mean the stored ones.
        more = settings(max_parallel_tasks=7, patterns=())
        result = await sweep(engine, more, run_dir=run_dir, resume=True)
    assert [t.task for t in result.tasks] == ["bbh/navigate"] and result.complete
    assert read(run_dir / "sweep.json")["settings"]["max_parallel_tasks"] == 7


async def test_more_steps_on_resume_extend_the_finished_tasks(
    tmp_path: Path, data_dir: Path
) -> None:
    run_dir = tmp_path / "sweep"
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        await sweep(engine, settings("bbh/navigate", "bbh/snarks"), run_dir=run_dir)
    longer = settings("bbh/navigate", "bbh/snarks", optimize=OptimizeConfig(2, 2, test_top=1))
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        result = await sweep(engine, longer, run_dir=run_dir, resume=True)
    assert result.complete
    for entry in ("bbh__navigate", "bbh__snarks"):
        assert len((run_dir / entry / "steps.jsonl").read_text().splitlines()) == 3


async def test_a_model_that_cannot_be_built_fails_before_anything_is_written(
    tmp_path: Path, data_dir: Path
) -> None:
    """A USD budget needs a price: refused in one line, before any call or any record."""
    unpriced = settings(
        scorer=ModelSettings("openai/no-such-price", base_url="http://127.0.0.1:9/v1")
    )
    async with Engine(cache_dir=tmp_path / "cache", budget=Budget(max_usd=1.0)) as engine:
        with pytest.raises(ConfigurationError, match="no known price for openai/no-such-price"):
            await sweep(engine, unpriced, run_dir=tmp_path / "sweep")
    assert list((tmp_path / "sweep").iterdir()) == []
