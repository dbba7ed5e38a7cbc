"""`-v/--verbose` and `--log-file` on every subcommand, and a log that never holds a key."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opro.cli.logs import ROOT, configure_logging
from opro.cli.main import build_parser, main
from opro.testing.fake_openai import ECHO_FORMS
from opro.testing.process import ServerProcess

SENTINEL = "sk-SENTINEL-Zq7Wv3Lk9Pp2Rr5Tt8"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The command configures the `opro` logger; leave it as the next test expects."""
    logger = logging.getLogger(ROOT)
    handlers, level = list(logger.handlers), logger.level
    yield
    for handler in logger.handlers[:]:
        if handler not in handlers:
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(level)


COMMANDS = [
    ["evaluate", "--task", "t.jsonl", "--instruction", "x"],
    ["tasks"],
    ["optimize", "--task", "t.jsonl"],
    ["demo", "linreg"],
    ["demo", "tsp"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_every_subcommand_takes_the_logging_options(command: list[str]) -> None:
    parser = build_parser()
    args = parser.parse_args([*command, "-vv", "--log-file", "run.log"])
    assert args.verbose == 2 and args.log_file == "run.log"
    args = parser.parse_args([*command, "--verbose"])
    assert args.verbose == 1 and not hasattr(args, "log_file")


def test_a_log_file_that_cannot_be_opened_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tasks", "--log-file", str(tmp_path / "missing" / "run.log")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("opro: error: cannot open log file") and str(tmp_path) in line


def test_levels_and_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("opro.test")
    configure_logging(argparse.Namespace(log_file=str(tmp_path / "run.log")))
    log.info("a decision")
    log.debug("a call")
    log.warning("damage")
    err = capsys.readouterr().err
    assert err == "opro: warning: damage\n"  # stderr: warnings only, without -v
    text = (tmp_path / "run.log").read_text()
    assert "INFO opro.test: a decision" in text and "a call" not in text
    configure_logging(argparse.Namespace(verbose=2))  # replaces the file handler
    log.debug("a call")
    assert "DEBUG opro.test: a call" in capsys.readouterr().err
    assert "a call" not in (tmp_path / "run.log").read_text()


def test_keys_in_the_environment_are_masked_in_every_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    configure_logging(argparse.Namespace(verbose=1, log_file=str(tmp_path / "run.log")))
    logging.getLogger("opro.test").info(
        "the server said: bad key %s (%s) at http://u:pw@host/v1?key=abc", SENTINEL, SENTINEL[:9]
    )
    for text in (capsys.readouterr().err, (tmp_path / "run.log").read_text()):
        assert "the server said: bad key ***" in text
        assert SENTINEL[:9] not in text and "pw@" not in text and "key=abc" not in text


def write_task(path: Path) -> Path:
    rows = [{"input": f"Is {i} odd?", "target": str(i % 2 == 1)} for i in range(20)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_cli(*args: str, key: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENAI_API_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "opro.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_a_key_the_server_echoes_never_reaches_the_log_file(tmp_path: Path) -> None:
    form = "exact"  # the other forms: tests/integration/test_credentials_http.py
    task = write_task(tmp_path / "task.jsonl")
    with ServerProcess("--api-key", SENTINEL, "--echo-key", form) as srv:
        srv.inject("503", count=3)  # three retries, logged with the server's words
        common = ["evaluate", "--task", str(task), "--scorer", "openai/fake-model"]
        common += ["--scorer-base-url", srv.base_url, "--instruction", "Think.", "-vv"]
        good = run_cli(
            *common, "--no-cache", "--log-file", str(tmp_path / "good.log"), key=SENTINEL
        )
        bad = run_cli(
            *common, "--no-cache", "--log-file", str(tmp_path / "bad.log"), key=SENTINEL + "x"
        )
    assert good.returncode == 0, good.stderr
    assert bad.returncode == 2, bad.stderr
    good_log = (tmp_path / "good.log").read_text()
    bad_log = (tmp_path / "bad.log").read_text()
    assert "retrying in" in good_log  # the 503s were logged, with the server's words
    assert "Incorrect API key provided: ***" in bad_log  # the 401 was logged, masked
    for text in (good_log, bad_log, good.stderr, bad.stderr):
        for shown in (SENTINEL, ECHO_FORMS[form](SENTINEL), ECHO_FORMS[form](SENTINEL + "x")):
            assert shown not in text
