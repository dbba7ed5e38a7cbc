"""How `opro` and its commands introduce themselves: help pages and the version.

Every command's help starts with one line on what it does and ends with the invocations
people actually type; in between its options are grouped (task, models, engine limits, cost,
cache, run directory, ...) with units and defaults (`cli/options.py`).
"""

from __future__ import annotations

import argparse
import textwrap
import tomllib
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

DISTRIBUTION = "opro-engine"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description and examples as written; wraps option help to the terminal."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


WIDTH = 88


def add_command(
    subparsers: Any,
    name: str,
    summary: str,
    examples: Sequence[str],
    details: str | None = None,
    *,
    short: str | None = None,
    usage: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand whose help reads: summary, details, options by group, examples.

    `short` is its line in the parent's list of commands (default: `summary`); an example
    may span lines (continued with a backslash).
    """
    paragraphs = [summary] if details is None else [summary, details]
    description = "\n\n".join(textwrap.fill(p, WIDTH) for p in paragraphs)
    lines = [f"  {line}" for example in examples for line in example.splitlines()]
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=short or summary,
        description=description,
        epilog="examples:\n" + "\n".join(lines),
        formatter_class=HelpFormatter,
        usage=usage,
    )
    return parser


def version() -> str:
    """The installed distribution's version, else the one in the source tree's pyproject."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return source_version()


def source_version() -> str:
    # The repository root is the package `opro`, so pyproject.toml sits one folder up.
    path = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return "unknown"
    found = project.get("version") if isinstance(project, dict) else None
    return found if isinstance(found, str) else "unknown"
