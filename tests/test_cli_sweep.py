"""`opro sweep` from the command line: user errors are one line before anything is spent,
progress is redrawn in place on a terminal and plain lines otherwise, `--resume` needs only
the directory, evaluate-only reads an instructions file, and no key reaches the sweep
directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from opro.cli.main import main
from opro.cli.sweep import WITHHELD
from opro.testing.process import ServerProcess
from opro.testing.terminal import run_in_terminal

SIM = ["--scorer", "simulated/s", "--optimizer", "simulated/o"]
SMALL = ["--steps", "1", "--candidates-per-step", "2", "--test-top", "1", "--test-limit", "5"]


def one_line_error(code: int, err: str, message: str) -> None:
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("opro: error: "), err
    assert message in err, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "bbh/navigat"], "unknown task 'bbh/navigat'"),
        (["--tasks", "bbh/*", "--tasks", "nothing/*"], "'nothing/*' matches no task"),
        (["--tasks", "missing.jsonl"], "task file missing.jsonl does not exist"),
        ([], "no tasks: give --tasks"),
        (["--tasks", "bbh/navigate", "--evaluate-only"], "needs --instruction or"),
        (["--tasks", "bbh/navigate", "--max-parallel-tasks", "0"], "--max-parallel-tasks"),
        (["--resume"], "--resume needs the --run-dir"),
    ],
)
def test_user_errors_are_one_line_and_nothing_is_created(
    args: list[str],
    message: str,
    tmp_path: Path,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = tmp_path / "sweep"
    extra = [] if "--resume" in args else ["--run-dir", str(run_dir)]
    try:
        code = main(["sweep", *args, *SIM, *extra, "--cache-dir", str(tmp_path / "c")])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    if code == 2 and err.startswith("opro sweep: error:"):
        assert message in err and err.count("\n") == 1
    else:
        one_line_error(code, err, message)
    assert not run_dir.exists() and not (tmp_path / "c").exists()


def test_resume_of_a_directory_without_a_sweep_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["sweep", "--resume", "--run-dir", str(tmp_path)])
    one_line_error(code, capsys.readouterr().err, "has no sweep.json")


def test_a_sweep_then_a_resume_with_only_the_directory(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "sweep"
    args = ["sweep", "--tasks", "bbh/nav*", "--tasks", "bbh/snarks", *SIM, *SMALL]
    args += ["--run-dir", str(run_dir), "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "done     bbh/navigate" in out and f"sweep directory: {run_dir}" in out
    lines = err.splitlines()
    assert "started bbh/navigate (new)" in lines and "done bbh/snarks" in lines
    assert any(line.startswith("totals: done 2 | calls ") for line in lines)
    record = json.loads((run_dir / "sweep.json").read_text())
    assert [t["status"] for t in record["tasks"]] == ["done", "done"]
    stored = record["info"]["cli"]
    assert stored["tasks"] == ["bbh/nav*", "bbh/snarks"] and stored["steps"] == 1
    # --steps 2 on resume extends both tasks; everything else comes from sweep.json.
    assert main(["sweep", "--resume", "--run-dir", str(run_dir), "--steps", "2"]) == 0
    for task in ("bbh__navigate", "bbh__snarks"):
        assert len((run_dir / task / "steps.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()
    assert main(["sweep", "--resume", "--run-dir", str(run_dir), "--position", "Q_end"]) == 2
    assert "problem.position was 'Q_begin' there" in capsys.readouterr().err


def test_evaluate_only_from_an_instructions_file(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = tmp_path / "found.txt"
    found.write_text("Let's think step by step.\n\nTake a deep breath.\n")
    run_dir = tmp_path / "sweep"
    args = ["sweep", "--evaluate-only", "--tasks", "bbh/navigate", "--tasks", "bbh/snarks"]
    args += ["--instructions-file", str(found), "--split", "train", "--scorer", "simulated/s"]
    args += ["--run-dir", str(run_dir), "--no-cache"]
    assert main(args) == 0
    for task, train in (("bbh__navigate", 50), ("bbh__snarks", 35)):
        report = json.loads((run_dir / task / "report.json").read_text())
        shown = [s["instruction"] for s in report["instructions"]]
        assert shown == ["Let's think step by step.", "Take a deep breath."]
        assert report["instructions"][0]["n"] == train  # 20% of the task: its training split
    found.unlink()  # resume does not need the file: the instructions are stored
    assert main(["sweep", "--resume", "--run-dir", str(run_dir)]) == 0
    assert json.loads((run_dir / "sweep.json").read_text())["mode"] == "evaluate"


@pytest.fixture
def fake() -> Iterator[ServerProcess]:
    server = ServerProcess()
    yield server
    server.close()


def test_no_key_reaches_the_sweep_directory(
    fake: ServerProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sentinel = "sk-sweepSENTINEL0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", sentinel)
    task = tmp_path / "t.jsonl"
    task.write_text("".join(f'{{"input": "Is {i} even?", "target": "True"}}\n' for i in range(10)))
    run_dir = tmp_path / "sweep"
    url = f"{fake.base_url}?api_key={sentinel}"
    args = ["sweep", "--evaluate-only", "--tasks", str(task), "--instruction", "Be brief."]
    args += ["--scorer", "openai/fake-model", "--scorer-base-url", url, "--split", "all"]
    args += ["--run-dir", str(run_dir), "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0, capsys.readouterr().err
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert sentinel not in path.read_text(), path
    stored = json.loads((run_dir / "sweep.json").read_text())["info"]["cli"]
    assert stored["scorer_base_url"] == WITHHELD
    capsys.readouterr()
    assert main(["sweep", "--resume", "--run-dir", str(run_dir)]) == 2
    assert "give --scorer-base-url again" in capsys.readouterr().err
    resumed = ["sweep", "--resume", "--run-dir", str(run_dir), "--scorer-base-url", url]
    assert main(resumed) == 0


def test_in_a_terminal_the_running_tasks_are_redrawn_in_place(tmp_path: Path) -> None:
    args = ["sweep", "--tasks", "bbh/navigate", "--tasks", "bbh/snarks", *SIM, *SMALL]
    args += ["--run-dir", str(tmp_path / "sweep"), "--cache-dir", str(tmp_path / "c")]
    code, screen = run_in_terminal(args)
    assert code == 0, screen
    assert "started bbh/navigate" in screen and "done bbh/snarks" in screen
    assert "totals:" in screen and "budget left unlimited" in screen
    # rich redraws the block: it moves the cursor up over the last frame and clears lines.
    assert "\x1b[2K" in screen and "\x1b[1A" in screen


def test_without_a_terminal_progress_is_plain_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sweep", "--tasks", "bbh/navigate", *SIM, *SMALL, "--run-dir", str(tmp_path / "s")]
    assert main([*args, "--cache-dir", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    assert "started bbh/navigate (new)" in err and "totals:" in err
    assert "\x1b[" not in err and "\r" not in err
