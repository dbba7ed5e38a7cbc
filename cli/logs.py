"""Logging for the `opro` command: `-v`/`--verbose` and `--log-file` on every subcommand.

The library logs under one `opro` logger tree (`opro.model` retries, `opro.limits` 429
pauses and concurrency window changes, `opro.budget` refusals and the run's spend on
resume, `opro.cache` damage and lock waits, `opro.optimize` resume decisions, `opro.engine`
the models it builds). INFO is what a user debugging a slow or stopped run wants (`-v`),
DEBUG is per call (`-vv`); a healthy run logs nothing at WARNING, which is all stderr shows
by default. `--log-file PATH` appends to PATH at the `-v` level, but at least INFO.

Everything written goes through `scrub` with the values of the environment's key-like
variables (`OPENAI_API_KEY`, ...): the library never logs a key, and this makes sure a
message quoting one (a server's error text, an exception) cannot carry it to a terminal or
a file either.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TextIO

from opro.errors import OproError
from opro.providers.urls import scrub

ROOT = "opro"
# Environment variables whose values are masked in every line written (any vendor's key).
_SECRET_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
_VERBOSE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogFileError(OproError):
    """The `--log-file` cannot be opened for appending."""


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    """`-v/--verbose` (repeatable) and `--log-file PATH` on `parser`.

    The defaults are suppressed, so a parser and its subcommands' parsers may all carry
    the options; read them with `configure_logging(args)`.
    """
    group = parser.add_argument_group("logging")
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log decisions to stderr (waits, retries, limits, budget, resume); -vv: every call",
    )
    group.add_argument(
        "--log-file",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="append the log to PATH (at the -v level, at least INFO)",
    )


def level_for(verbose: int) -> int:
    """0: warnings only; 1 (-v): INFO; 2 or more (-vv): DEBUG."""
    return logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG


def configure_logging(args: argparse.Namespace) -> None:
    """Send the `opro` loggers to stderr and, with `--log-file`, to a file, as `args` say.

    Replaces what an earlier call set up, so `main()` may run more than once in a process.
    A log file that cannot be opened is a `LogFileError` (one line, before anything runs).
    """
    verbose = getattr(args, "verbose", 0) or 0
    path = getattr(args, "log_file", None)
    logger = logging.getLogger(ROOT)
    for old in [h for h in logger.handlers if isinstance(h, _Scrubbing)]:
        logger.removeHandler(old)
        old.close()
    secrets = _environment_secrets()
    level = level_for(verbose)
    verbose_format = logging.Formatter(_VERBOSE_FORMAT)
    stream = _Stream(sys.stderr, secrets)
    stream.setLevel(level)
    stream.setFormatter(verbose_format if verbose > 0 else _Quiet())
    handlers: list[logging.Handler] = [stream]
    if path:
        try:
            file = _File(path, secrets)
        except OSError as exc:
            raise LogFileError(f"cannot open log file {path}: {exc.strerror}") from None
        file.setLevel(min(level, logging.INFO))
        file.setFormatter(verbose_format)
        handlers.append(file)
    lowest = min(h.level for h in handlers)
    # Left to the root logger when only warnings are wanted (the library's default).
    logger.setLevel(logging.NOTSET if lowest >= logging.WARNING else lowest)
    for handler in handlers:
        logger.addHandler(handler)


class _Quiet(logging.Formatter):
    """`opro: warning: ...`, like the command's one-line errors."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return f"opro: {record.levelname.lower()}: {record.message}"


class _Scrubbing(logging.Handler):
    """Masks credentials (URLs' userinfo, key-like parameters, `secrets`) in every line."""

    secrets: list[str]

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record), self.secrets)


class _Stream(_Scrubbing, logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self, stream: TextIO, secrets: list[str]) -> None:
        super().__init__(stream)
        self.secrets = secrets


class _File(_Scrubbing, logging.FileHandler):
    def __init__(self, path: str, secrets: list[str]) -> None:
        super().__init__(path, mode="a", encoding="utf-8")
        self.secrets = secrets


def _environment_secrets() -> list[str]:
    return [
        value
        for name, value in os.environ.items()
        if name.upper().endswith(_SECRET_SUFFIXES) and len(value) >= 8
    ]
