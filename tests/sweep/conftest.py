"""Sweep and run directories for the report tests, made by the real commands.

Each task's directory is what `opro optimize --run-dir` (simulated models) or
`opro evaluate --out` wrote; only `sweep.json` is written by hand, in the format the sweep
runner writes, since the reports must work from whatever is on disk. A task stopped by its
budget (`--budget-tokens`) leaves exactly what a task interrupted mid-run leaves: config,
steps and spend ledger, no results.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from opro.cli.main import main

MODELS = ["--scorer", "simulated/s", "--optimizer", "simulated/o", "--no-cache"]


def optimize(data_dir: Path, task: str, run_dir: Path, *extra: str, code: int = 0) -> Path:
    argv = ["optimize", "--task", task, "--data-dir", str(data_dir), *MODELS]
    argv += ["--steps", "3", "--candidates-per-step", "3", "--test-limit", "40"]
    assert main([*argv, *extra, "--run-dir", str(run_dir)]) == code
    return run_dir


def evaluate(data_dir: Path, task: str, out: Path, instructions: list[str]) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = ["evaluate", "--task", task, "--data-dir", str(data_dir), "--split", "test"]
    argv += ["--limit", "30", "--scorer", "simulated/s", "--no-cache", "--out", str(out)]
    for text in instructions:
        argv += ["--instruction", text]
    assert main(argv) == 0
    return out


def entry(task: str, status: str, reason: str | None = None) -> dict[str, Any]:
    return {
        "task": task,
        "dir": task.replace("/", "__"),
        "status": status,
        "reason": reason,
        "started": "2025-01-01T00:00:00+00:00" if status != "pending" else None,
        "finished": "2025-01-01T00:01:00+00:00" if status in ("done", "failed") else None,
    }


TOTALS = {
    "calls": 4321,
    "cache_hits": 79,
    "n429": 5,
    "tokens_in": 200000,
    "tokens_out": 12345,
    "cost_usd": 0.75,
    "wall_s": 42.5,
}


def write_sweep(root: Path, mode: str, tasks: list[dict[str, Any]], **extra: Any) -> Path:
    sweep = {"version": 1, "mode": mode, "settings": {"scorer": "simulated/s"}, "tasks": tasks}
    (root / "sweep.json").write_text(json.dumps({**sweep, "totals": TOTALS, **extra}))
    return root


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """Run directories made once: two finished, one stopped by its budget mid-run."""
    root = tmp_path_factory.mktemp("runs")
    return {
        "bbh/navigate": optimize(data_dir, "bbh/navigate", root / "navigate"),
        "bbh/sports_understanding": optimize(
            data_dir, "bbh/sports_understanding", root / "sports"
        ),
        "bbh/date_understanding": optimize(
            data_dir, "bbh/date_understanding", root / "date", "--budget-tokens", "18000", code=3
        ),
        "stopped bbh/sports_understanding": optimize(
            data_dir, "bbh/sports_understanding", root / "sports-stopped", "--budget-tokens",
            "5000", code=3,
        ),
    }  # fmt: skip


def _copy(run: Path, root: Path, task: str) -> Path:
    return Path(shutil.copytree(run, root / task.replace("/", "__")))


@pytest.fixture
def finished_sweep(tmp_path: Path, runs: dict[str, Path]) -> Path:
    root = tmp_path / "finished"
    root.mkdir()
    for task in ("bbh/navigate", "bbh/sports_understanding"):
        _copy(runs[task], root, task)
    return write_sweep(root, "optimize", [entry("bbh/sports_understanding", "done"),
                                          entry("bbh/navigate", "done")])  # fmt: skip


HALF = [
    entry("bbh/navigate", "done"),
    entry("bbh/date_understanding", "running"),
    entry("bbh/sports_understanding", "stopped", "the sweep's budget ran out"),
    entry("bbh/word_sorting", "failed", "bbh/word_sorting.json line 3 is not valid JSON"),
    entry("bbh/snarks", "pending"),
]


@pytest.fixture
def half_sweep(tmp_path: Path, runs: dict[str, Path]) -> Path:
    """Done, running (mid-run files, a torn last line), stopped, failed and pending tasks."""
    root = tmp_path / "half"
    root.mkdir()
    _copy(runs["bbh/navigate"], root, "bbh/navigate")
    _copy(runs["bbh/date_understanding"], root, "bbh/date_understanding")
    _copy(runs["stopped bbh/sports_understanding"], root, "bbh/sports_understanding")
    with open(root / "bbh__date_understanding" / "steps.jsonl", "ab") as fh:
        fh.write(b'{"step": 99, "candid')  # an append in progress while the report is read
    return write_sweep(root, "optimize", HALF)
