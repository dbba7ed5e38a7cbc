"""sweep.json: written atomically, read back field by field; a damaged one is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opro.sweep.state import (
    SweepError,
    SweepRecord,
    SweepTotals,
    TaskEntry,
    read_record,
    write_record,
)


def record() -> SweepRecord:
    tasks = [TaskEntry("bbh/navigate", "bbh__navigate", "done", None, "t0", "t1")]
    return SweepRecord("optimize", {"tasks": ["bbh/*"]}, tasks, SweepTotals(calls=3, cost_usd=0.5))


def test_a_record_reads_back_as_written(tmp_path: Path) -> None:
    write_record(tmp_path, record())
    assert read_record(tmp_path) == record()
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.json"]  # no temporary file left


def test_an_ablation_arm_directory_is_nested_plain_names(tmp_path: Path) -> None:
    arms = [TaskEntry("exemplars=0/rep0", "arms/exemplars=0/rep0")]
    written = SweepRecord("optimize", {"tasks": ["bbh/navigate"]}, arms)
    write_record(tmp_path, written)
    assert read_record(tmp_path) == written


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda d: d.update(version=2), "not a sweep record of version 1"),
        (lambda d: d["tasks"][0].update(status="finished"), "task 0 is not a task entry"),
        (lambda d: d["tasks"][0].update(dir="../elsewhere"), "task 0 is not a task entry"),
        (lambda d: d["tasks"][0].update(dir="arms/../../up"), "task 0 is not a task entry"),
        (lambda d: d["tasks"][0].update(dir="/etc/arms"), "task 0 is not a task entry"),
        (lambda d: d["tasks"][0].update(dir="arms//rep0"), "task 0 is not a task entry"),
        (lambda d: d["tasks"][0].update(dir="arms\\rep0"), "task 0 is not a task entry"),
        (lambda d: d["tasks"].append(dict(d["tasks"][0])), "two tasks share a directory"),
        (lambda d: d["totals"].update(calls=-1), "totals.calls is not a non-negative number"),
        (lambda d: d["totals"].update(cost_usd="lots"), "totals.cost_usd is not a non-negative"),
        (lambda d: d.update(tasks=[]), "no task list"),
    ],
)
def test_a_damaged_record_is_one_line(tmp_path: Path, change: object, why: str) -> None:
    write_record(tmp_path, record())
    data = json.loads((tmp_path / "sweep.json").read_text())
    change(data)  # type: ignore[operator]
    (tmp_path / "sweep.json").write_text(json.dumps(data))
    with pytest.raises(SweepError, match="is damaged") as info:
        read_record(tmp_path)
    assert why in str(info.value) and "\n" not in str(info.value)


def test_torn_json_is_damaged_and_a_missing_file_is_nothing_to_resume(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="nothing to resume"):
        read_record(tmp_path)
    (tmp_path / "sweep.json").write_text('{"version": 1, "mo')
    with pytest.raises(SweepError, match="not valid JSON"):
        read_record(tmp_path)
