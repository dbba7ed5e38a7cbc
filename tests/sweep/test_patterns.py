"""Task patterns expand against the task list; an unknown one fails before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from opro.errors import SettingsError
from opro.sweep.patterns import BBH_SIZE_VARIANTS, expand_tasks, task_dirs
from opro.tasks.datasets import BBH_TASKS
from opro.tasks.errors import TaskError


def test_bbh_glob_is_the_23_paper_tasks_and_27_with_the_variants(data_dir: Path) -> None:
    paper = expand_tasks(["bbh/*"], data_dir=data_dir)
    everything = expand_tasks(["bbh/*"], data_dir=data_dir, include_variants=True)
    assert len(paper) == 23 and len(everything) == 27
    assert everything == [f"bbh/{t}" for t in BBH_TASKS]  # the data release's 27 files
    assert set(everything) - set(paper) == BBH_SIZE_VARIANTS
    # The paper's logical_deduction and tracking_shuffled_objects are the seven-object files.
    assert "bbh/logical_deduction_seven_objects" in paper
    assert "bbh/tracking_shuffled_objects_seven_objects" in paper


def test_names_files_and_globs_mix_in_order_each_once(data_dir: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"input": "q", "target": "a"}\n')
    names = expand_tasks(
        ["GSM8K", "bbh/nav*", str(mine), "bbh/navigate", "bbh/logical_deduction_three_objects"],
        data_dir=data_dir,
    )
    assert names == ["gsm8k", "bbh/navigate", str(mine), "bbh/logical_deduction_three_objects"]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("bbh/navigat", "unknown task 'bbh/navigat'"),
        ("bbh/zz*", "matches no task"),
        ("bbh/logical_deduction_three*", "matches only BBH size variants"),
        ("missing.jsonl", "task file missing.jsonl does not exist"),
        ("  ", "an empty task pattern"),
    ],
)
def test_a_bad_pattern_is_one_line(data_dir: Path, pattern: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as info:
        expand_tasks(["bbh/navigate", pattern], data_dir=data_dir)
    assert "\n" not in str(info.value)


def test_paper_tasks_without_a_data_directory_say_where_to_find_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPRO_DATA_DIR", raising=False)
    with pytest.raises(TaskError, match="no data directory"):
        expand_tasks(["bbh/*"])
    assert expand_tasks(["synthetic/*"]) == [
        "synthetic/boolean_expressions",
        "synthetic/arithmetic",
    ]


def test_a_malformed_file_does_not_stop_the_expansion(tmp_path: Path) -> None:
    """Globs match file names without loading them: a broken file fails its own task later."""
    root = tmp_path / "data"
    (root / "BIG-Bench-Hard-data").mkdir(parents=True)
    (root / "BIG-Bench-Hard-data" / "navigate.json").write_text("{not json")
    (root / "BIG-Bench-Hard-data" / "snarks.json").write_text('{"examples": []}')
    assert expand_tasks(["bbh/*"], data_dir=root) == ["bbh/navigate", "bbh/snarks"]


def test_task_directories_are_distinct_and_safe() -> None:
    dirs = task_dirs(["bbh/navigate", "a/b/parity.jsonl", "c/parity.jsonl", "hf:x/y:z", "../.."])
    assert dirs == ["bbh__navigate", "parity.jsonl", "parity.jsonl-2", "hf-x__y-z", "__"]
    assert all("/" not in d and d not in (".", "..") for d in dirs)
