"""Every numeric option of every subcommand, and every config value, is finite and in range.

`--price nan,nan --budget-usd 0.000001` and `--budget-usd nan` used to run uncapped, `--timeout
nan` made every attempt time out at once, `--temperature inf` was stored as null, and `--rpm
inf`, `--max-tokens 10**23` or `--steps 10**400` ended in tracebacks. Each bad value is now one
line naming the option, before anything runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opro.checks import FloatRange, IntRange
from opro.cli.main import build_parser, main

# Every numeric option, by subcommand (the options in the issue and all the others).
ENGINE = [
    "--max-tokens", "--max-concurrency", "--rpm", "--tpm", "--max-attempts", "--timeout",
    "--max-errors", "--max-error-rate", "--budget-usd", "--budget-tokens", "--calibrate",
]  # fmt: skip
DEMO = [
    "--steps", "--optimizer-max-tokens", "--candidates-per-step", "--temperature",
    "--max-shown", "--seed", "--max-concurrency", "--rpm", "--tpm", "--max-attempts",
    "--timeout", "--budget-usd", "--budget-tokens",
]  # fmt: skip
OPTIMIZE = [
    "--optimizer-max-tokens", "--steps", "--candidates-per-step", "--temperature",
    "--temperature-end", "--seed", "--exemplars",
    "--train-fraction", "--validation-fraction", "--split-seed", "--eval-every",
    "--patience", "--test-top", "--test-limit", "--racing-delta", "--population",
]  # fmt: skip
BATCH = ["--batch-poll-max"]
NUMERIC: dict[tuple[str, ...], list[str]] = {
    ("evaluate",): ["--limit", *ENGINE, *BATCH],
    ("optimize",): [*OPTIMIZE, *ENGINE, *BATCH],
    ("sweep",): [
        *OPTIMIZE,
        *ENGINE,
        *BATCH,
        "--max-parallel-tasks",
        "--progress-every",
        "--ray-cpus",
    ],
    ("ablate",): [
        *OPTIMIZE,
        *ENGINE,
        *BATCH,
        "--repeats",
        "--total-candidates",
        "--max-parallel-arms",
        "--progress-every",
    ],
    ("demo", "linreg"): ["--runs", "--points", *DEMO],
    ("demo", "tsp"): ["--n", "--instances", "--solver-time-limit", *DEMO],
}
# Options whose value is not one number; each has its own cases below.
# (`--max-shown` and `--min-score` of optimize also take a word: all, auto, none.)
COMPOSITE = {
    "--price", "--optimizer-price", "--score-buckets", "--settings", "--max-shown", "--min-score"
}  # fmt: skip
# Options whose `type` checks a text, not a number: `--cache` (a directory or a Redis URL).
TEXT = {"--cache"}


def _subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subcommands(sub, (*path, name))


def _typed_options() -> dict[tuple[str, ...], dict[str, argparse.Action]]:
    found: dict[tuple[str, ...], dict[str, argparse.Action]] = {}
    for path, sub in _subcommands(build_parser()):
        typed = {a.option_strings[-1]: a for a in sub._actions if a.type is not None}
        typed = {o: a for o, a in typed.items() if o not in TEXT}
        if typed:
            found[path] = typed
    return found


def test_every_option_with_a_type_is_a_checked_range() -> None:
    """A new option with a bare `int` or `float` type would let NaN or 10**400 through."""
    typed = _typed_options()
    assert set(typed) == set(NUMERIC)
    for path, actions in typed.items():
        for option, action in actions.items():
            if option in COMPOSITE:
                continue
            assert isinstance(action.type, IntRange | FloatRange), (path, option, action.type)
        checked = {o for o, a in actions.items() if isinstance(a.type, IntRange | FloatRange)}
        assert set(NUMERIC[path]) == checked, path


def _bad_values(kind: IntRange | FloatRange) -> list[str]:
    values = ["nan", "NaN", "inf", "-inf", "1e400", "-1e400", "abc", "", "1" + "0" * 400]
    low = kind.low
    if low is not None:
        values.append(str(low - 1))
        if isinstance(kind, FloatRange) and kind.low_open:
            values.append(str(low))
    if kind.high is not None:
        values.append(str(kind.high * 10 + 1))
    if isinstance(kind, IntRange):
        values.append("1.5")
    return values


def _cases() -> list[tuple[tuple[str, ...], str, str]]:
    typed = _typed_options()
    cases = []
    for path, options in NUMERIC.items():
        for option in options:
            kind = typed[path][option].type
            assert isinstance(kind, IntRange | FloatRange)
            cases += [(path, option, value) for value in _bad_values(kind)]
    return cases


def _one_line_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(("path", "option", "value"), _cases())
def test_bad_numbers_are_one_line_naming_the_option(
    path: tuple[str, ...], option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _one_line_usage_error([*path, f"{option}={value}"], capsys)
    assert f"argument {option}: must be " in line
    assert len(line) < 300


@pytest.mark.parametrize(
    ("path", "option", "value"),
    [
        (("evaluate",), "--price", "nan,nan"),
        (("evaluate",), "--price", "inf,1"),
        (("evaluate",), "--price", "1,-1"),
        (("evaluate",), "--price", "0.15"),
        (("optimize",), "--price", "1e400,1"),
        (("optimize",), "--optimizer-price", "nan,nan"),
        (("demo", "tsp"), "--optimizer-price", "1,inf"),
        (("demo", "linreg"), "--optimizer-price", "-0.1,2"),
        (("optimize",), "--max-shown", "nan"),
        (("optimize",), "--max-shown", "0"),
        (("optimize",), "--max-shown", "1" + "0" * 400),
        (("optimize",), "--max-shown", "1.5"),
        (("optimize",), "--max-shown", "some"),
        (("optimize",), "--min-score", "nan"),
        (("optimize",), "--min-score", "-inf"),
        (("optimize",), "--min-score", "1e400"),
        (("optimize",), "--min-score", "high"),
        (("optimize",), "--score-buckets", "nan"),
        (("optimize",), "--score-buckets", "0"),
        (("optimize",), "--score-buckets", "1" + "0" * 400),
        (("demo", "linreg"), "--settings", "1" + "0" * 400 + ",1"),
        (("demo", "linreg"), "--settings", "nan,1"),
        (("demo", "linreg"), "--settings", "2000000,1"),
    ],
)
def test_composite_values_are_checked_too(
    path: tuple[str, ...], option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _one_line_usage_error([*path, f"{option}={value}"], capsys)
    assert f"argument {option}: " in line


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("steps = nan", "steps"),
        ("steps = 1e400", "steps"),
        ("steps = 100000000000000000000000", "steps"),
        ("temperature = nan", "temperature"),
        ("temperature = inf", "temperature"),
        ("temperature = -1", "temperature"),
        ("temperature-end = 3.0", "temperature-end"),
        ("rpm = inf", "rpm"),
        ("tpm = nan", "tpm"),
        ("timeout = 0", "timeout"),
        ("timeout = 1e400", "timeout"),
        ("budget-usd = nan", "budget-usd"),
        ("budget_usd = -1", "budget_usd"),
        ("budget-tokens = 0", "budget-tokens"),
        ("max-tokens = 100000000000000000000000", "max-tokens"),
        ("max-concurrency = 0", "max-concurrency"),
        ("max-error-rate = nan", "max-error-rate"),
        ("max-attempts = 0", "max-attempts"),
        ("train-fraction = 1.5", "train-fraction"),
        ("validation-fraction = -inf", "validation-fraction"),
        ("seed = -1", "seed"),
        ("split-seed = 1e3", "split-seed"),
        ("min-score = nan", "min-score"),
        ('price = "nan,nan"', "price"),
        ('optimizer-price = "inf,0"', "optimizer-price"),
    ],
)
def test_config_file_values_are_checked_like_flags(
    toml: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(f'task = "synthetic/boolean_expressions"\n{toml}\n')
    code = main(["optimize", "--config", str(config), "--run-dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"{config}: {key}: " in lines[0]
    assert not (tmp_path / "run").exists()


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opro.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


@pytest.mark.parametrize(
    "extra",
    [
        ["--price", "nan,nan", "--budget-usd", "0.000001"],
        ["--budget-usd", "nan"],
        ["--timeout", "nan"],
        ["--rpm", "inf"],
        ["--max-tokens", str(10**23)],
        ["--max-concurrency", "1" + "0" * 400],
    ],
)
def test_the_reported_values_fail_in_a_real_process(extra: list[str], tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"input": "Is 1 odd?", "target": "True"}) + "\n")
    result = _run_cli(
        "evaluate", "--task", str(data), "--instruction", "x", "--scorer", "simulated/x",
        "--cache-dir", str(tmp_path / "cache"), *extra,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"argument {extra[0]}: " in lines[0], result.stderr
    assert result.stdout == ""


def test_optimize_temperature_nan_is_refused_not_stored_as_null(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for value in ("nan", "inf"):
        argv = ["optimize", "--task", "synthetic/boolean_expressions", f"--temperature={value}"]
        line = _one_line_usage_error([*argv, "--run-dir", str(tmp_path / "r")], capsys)
        assert "argument --temperature: must be a number from 0 to 2" in line
    assert not (tmp_path / "r").exists()
