"""Files a command writes or reads back: checked before anything is paid for, or named when damaged.

`opro evaluate --out` pointing at a directory (or a path no file can have) used to be noticed
only after the evaluation was paid for; a `steps.jsonl` line that is valid JSON of the wrong
shape crashed `opro optimize --resume` with a traceback. Both are now one line up front.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from opro.cli.main import main
from opro.optimize.records import step_record_problem
from opro.optimize.runlog import RunDirError, read_steps
from opro.testing.process import ServerProcess


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess()
    yield srv
    srv.close()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "d.jsonl"
    _write_task(path)
    return path


def _write_task(path: Path) -> None:
    rows = [{"input": f"Is {i} odd?", "target": str(i % 2 == 1)} for i in range(12)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (lambda tmp: tmp, "it is a directory"),
        (lambda tmp: tmp / ("r" * 300 + ".json"), "File name too long"),
        (lambda tmp: tmp / "d.jsonl" / "r.json", "does not exist"),
    ],
)
def test_an_unwritable_report_path_is_refused_before_any_call(
    where: object,
    message: str,
    server: ServerProcess,
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert callable(where)
    out = where(tmp_path)
    code = main(
        [
            "evaluate", "--task", str(data), "--instruction", "x",
            "--scorer", "openai/fake-model", "--scorer-base-url", server.base_url,
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 2
    line = _one_line(capsys)
    assert line.startswith("opro: error: cannot write") and message in line
    assert server.stats()["requests_total"] == 0


def test_checking_the_report_path_neither_truncates_nor_leaves_a_file(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = tmp_path / "kept.json"
    kept.write_text("earlier report")
    fresh = tmp_path / "fresh.json"
    for out in (kept, fresh):
        code = main(
            [
                "evaluate", "--task", str(data), "--instruction", "x", "--scorer", "nobody/x",
                "--no-cache", "--out", str(out),
            ]
        )  # fmt: skip
        assert code == 2 and "unknown provider" in _one_line(capsys)
    assert kept.read_text() == "earlier report"
    assert not fresh.exists()


# -- steps.jsonl of the wrong shape -----------------------------------------------------------

STEP = {
    "step": 1,
    "candidates": [{"status": "new", "canonical": "x", "score": 0.5, "errors": 0}],
    "totals": {"calls": 1, "cost_usd": 0.0},
    "validation": None,
}
BAD_RECORDS: list[object] = [
    [],
    "step",
    None,
    3,
    {"step": "x"},
    {"step": 1},
    {"step": -1, "candidates": [], "totals": {}},
    {"step": True, "candidates": [], "totals": {}},
    {**STEP, "candidates": {}},
    {**STEP, "candidates": ["new"]},
    {**STEP, "candidates": [{"canonical": "x"}]},
    {**STEP, "candidates": [{"status": "new", "canonical": "x", "score": 0.5}]},
    {**STEP, "candidates": [{"status": "new", "canonical": 1, "score": 0.5, "errors": 0}]},
    {**STEP, "candidates": [{"status": "start", "canonical": "x", "score": "high", "errors": 0}]},
    {**STEP, "totals": None},
    {**STEP, "totals": {"cost_usd": "free"}},
    {**STEP, "totals": {"calls": -3}},
    {**STEP, "validation": {"score": 0.4}},
    {**STEP, "validation": []},
]


def test_a_well_formed_record_passes() -> None:
    assert step_record_problem(STEP) is None
    assert step_record_problem({**STEP, "new field": [1, 2]}) is None
    scored_none = {"status": "new", "canonical": "x", "score": None, "errors": 2}
    assert step_record_problem({**STEP, "candidates": [scored_none]}) is None


@pytest.mark.parametrize("record", BAD_RECORDS)
def test_read_steps_names_the_file_and_line_of_a_misshapen_record(
    record: object, tmp_path: Path
) -> None:
    path = tmp_path / "steps.jsonl"
    first = {**STEP, "step": 0}
    path.write_text("\n".join(json.dumps(r) for r in (first, record, {**STEP, "step": 2})) + "\n")
    with pytest.raises(RunDirError) as info:
        read_steps(path)
    message = str(info.value)
    assert message.startswith(f"{path} line 2 is not a step record (") and "\n" not in message


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A two-step optimize run on simulated models, and the arguments that resume it."""
    root = tmp_path_factory.mktemp("run")
    task = root / "d.jsonl"
    _write_task(task)
    argv = [
        "optimize", "--task", str(task), "--scorer", "simulated/s", "--optimizer", "simulated/o",
        "--steps", "2", "--candidates-per-step", "2", "--train-fraction", "0.5",
        "--test-top", "0", "--no-cache",
    ]  # fmt: skip
    assert main([*argv, "--run-dir", str(root / "run")]) == 0
    return root / "run", argv


@pytest.mark.parametrize("line", [2, 3])
@pytest.mark.parametrize("record", BAD_RECORDS[:8])
def test_resume_with_a_misshapen_step_line_is_one_line(
    record: object,
    line: int,
    finished_run: tuple[Path, list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    original, argv = finished_run
    run = tmp_path / "run"
    shutil.copytree(original, run)
    steps = run / "steps.jsonl"
    lines = steps.read_text().splitlines()
    assert len(lines) == 3
    lines[line - 1] = json.dumps(record)
    steps.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main([*argv, "--steps", "3", "--resume", "--run-dir", str(run)]) == 2
    message = _one_line(capsys)
    assert f"{steps} line {line}" in message and "damaged" in message


def test_resume_names_the_line_of_a_step_out_of_order(
    finished_run: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original, argv = finished_run
    run = tmp_path / "run"
    shutil.copytree(original, run)
    steps = run / "steps.jsonl"
    lines = steps.read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "step": 5})
    steps.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main([*argv, "--resume", "--run-dir", str(run)]) == 2
    assert f"{steps} line 2: step 1 missing or out of order" in _one_line(capsys)
