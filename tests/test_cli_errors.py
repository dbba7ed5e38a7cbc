"""Which failures are the user's (one line) and which are bugs (a traceback and a line saying so).

Only errors the code raises on purpose for a user derive from `opro.errors.OproError`; the
command line prints those as one line. It used to turn any `ValueError` into a one-line "user
error" too, so a bug inside the engine showed no traceback and looked like the user's fault.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opro.caches.disk import CacheError
from opro.cli import main as cli
from opro.cli.common import UsageError
from opro.cli.main import main
from opro.engine.budget import BudgetExceeded
from opro.engine.evaluate import EvaluationAborted
from opro.engine.model import ModelCallError
from opro.errors import OproError, SettingsError
from opro.optimize.runlog import RunDirError
from opro.problems.tsp_solvers import SolverError
from opro.providers.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ProviderError,
    RateLimitError,
    TransientError,
)
from opro.tasks import TaskError

USER_ERRORS = [
    UsageError,
    TaskError,
    CacheError,
    RunDirError,
    EvaluationAborted,
    BudgetExceeded,
    ModelCallError,
    ProviderError,
    RateLimitError,
    TransientError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    SolverError,
    SettingsError,
]


@pytest.mark.parametrize("kind", USER_ERRORS)
def test_every_error_raised_for_the_user_has_one_root(kind: type[Exception]) -> None:
    assert issubclass(kind, OproError)


def test_the_root_keeps_the_builtin_bases_callers_catch() -> None:
    assert issubclass(CacheError, OSError)
    assert issubclass(SettingsError, ValueError)
    assert issubclass(SolverError, RuntimeError)


def _fail_with(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def broken(data_dir: str | None = None) -> list[object]:
        raise error

    monkeypatch.setattr(cli, "list_tasks", broken)


@pytest.mark.parametrize(
    "bug",
    [
        ValueError("an internal sentinel"),
        KeyError("an internal sentinel"),
        ExceptionGroup("workers", [TaskError("fine"), ValueError("an internal sentinel")]),
    ],
)
def test_an_internal_error_keeps_its_traceback_and_says_it_is_a_bug(
    bug: Exception, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fail_with(monkeypatch, bug)
    code = main(["tasks"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert "an internal sentinel" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("opro: internal error: this is a bug in opro-engine")
    assert "report" in last


@pytest.mark.parametrize(
    "error",
    [
        TaskError("bad task file x.jsonl line 3"),
        SettingsError("temperature must be a number from 0 to 2, got nan"),
        ConfigurationError("OPENAI_API_KEY is not set"),
        ExceptionGroup("workers", [CacheError("cannot write the cache"), UsageError("x")]),
    ],
)
def test_a_user_error_is_one_line_exit_2(
    error: Exception, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fail_with(monkeypatch, error)
    assert main(["tasks"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("opro: error: ")


def test_library_validation_reached_from_the_command_line_is_still_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"input": "Is 1 odd?", "target": "True"}) + "\n")
    code = main(
        [
            "evaluate", "--task", str(data), "--instruction", "x", "--scorer", "simulated/x",
            "--position", "A_begin", "--no-qa", "--no-cache",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == ["opro: error: position A_begin needs the Q:/A: framing"]
