"""`opro demo` checks everything it can before the exact TSP solves (minutes) or any call.

A mistyped `--optimizer` used to surface only after every instance had been solved exactly.
The solver is replaced by a sentinel here: each case must fail with one line and never reach it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from opro.cli.main import main
from opro.problems import tsp


class SolverReached(Exception):
    """The expensive reference computation started: the check came too late."""


@pytest.fixture
def solver_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []

    def reference(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise SolverReached

    monkeypatch.setattr(tsp, "reference", reference)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return calls


def _taken(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "n5" / "instance0"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    return tmp_path / "runs"


def _file(tmp_path: Path) -> Path:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    return blocker / "runs"


# A server nobody listens on: nothing may be sent to it anyway.
LOCAL_SERVER = [
    "--optimizer",
    "openai-compatible/m",
    "--optimizer-base-url",
    "http://127.0.0.1:9/v1",
]
CASES: list[tuple[list[str], str]] = [
    (["--optimizer", "nope/x"], "unknown provider 'nope'"),
    (["--optimizer", "no-slash"], "provider/model"),
    (["--optimizer", "openai/gpt-4o"], "OPENAI_API_KEY"),
    (["--optimizer", "openai-compatible/m"], "needs a base URL"),
    ([*LOCAL_SERVER, "--budget-usd", "1"], "no known price"),
    ([*LOCAL_SERVER, "--optimizer-api", "completions", "--rpm", "nan"], "--rpm"),
    (["--optimizer", "simulated/o", "--optimizer-price", "nan,nan"], "IN,OUT"),
    (["--optimizer", "simulated/o", "--temperature", "inf"], "--temperature"),
    (["--optimizer", "simulated/o", "RUN_DIR_TAKEN"], "already holds a run"),
    (["--optimizer", "simulated/o", "RUN_DIR_FILE"], "is not a directory"),
    (["--baselines-only", "RUN_DIR_FILE"], "is not a directory"),
]


@pytest.mark.parametrize(("extra", "message"), CASES)
def test_demo_tsp_fails_before_any_exact_solve(
    extra: list[str],
    message: str,
    solver_calls: list[Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = tmp_path / "runs"
    if "RUN_DIR_TAKEN" in extra:
        run_dir = _taken(tmp_path)
    if "RUN_DIR_FILE" in extra:
        run_dir = _file(tmp_path)
    extra = [a for a in extra if not a.startswith("RUN_DIR_")]
    argv = [
        "demo", "tsp", "--n", "5", "--instances", "1", "--run-dir", str(run_dir),
        "--cache-dir", str(tmp_path / "cache"), *extra,
    ]  # fmt: skip
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own one-line errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert solver_calls == []
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_with_valid_options_the_solver_is_reached(solver_calls: list[Any], tmp_path: Path) -> None:
    """The sentinel works: a run whose checks pass goes on to the solves."""
    argv = [
        "demo", "tsp", "--n", "5", "--instances", "1", "--optimizer", "simulated/o",
        "--run-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    main(argv)  # the sentinel ends it as an unexpected error
    assert len(solver_calls) == 1
