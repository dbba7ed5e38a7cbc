"""`opro report DIR`: rebuild the tables, plots and page of a sweep or run directory.

Reads only what is on disk (nothing is re-run or paid for) and calls
`opro.sweep.report.write_reports` once. A missing or malformed file is a one-line error
naming it (exit 2). `opro optimize` writes the page of its run at the end through
`write_run_report`, where a report that cannot be written is a warning: the run itself is
complete, and `opro report` can rebuild the page later.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from opro.cli.help import add_command
from opro.sweep import plots
from opro.sweep.report import NO_MATPLOTLIB, ReportError, write_reports


def register(subparsers: Any) -> None:
    """Add the `report` command to the `opro` parser's subcommands."""
    p = add_command(
        subparsers,
        "report",
        "Rebuild the tables, plots and report.html of a sweep or run directory from what is "
        "on disk (nothing is re-run or paid for).",
        ["opro report sweeps/bbh", "opro report opro-runs/navigate"],
        short="rebuild tables, plots and report.html from a run or sweep directory",
    )
    p.add_argument(
        "directory",
        help="a sweep directory (with sweep.json) or an `opro optimize` run directory",
    )


def _describe(directory: Path, written: list[Path]) -> str:
    page = next((p for p in written if p.name == "report.html"), None)
    others = [p.name for p in written if p.parent == directory and p is not page]
    n_plots = sum(p.parent != directory for p in written)
    extra = [*others, *([f"{n_plots} plot{'s' * (n_plots != 1)} in plots/"] if n_plots else [])]
    return f"report: {page}" + (f" (also {', '.join(extra)})" if extra else "")


def cmd_report(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    written = write_reports(directory)
    if not plots.available():
        print(f"opro: {NO_MATPLOTLIB}", file=sys.stderr)
    print(_describe(directory, written))
    return 0


def write_run_report(run_dir: Path) -> None:
    """The page of a finished or stopped `opro optimize` run; a failure is only a warning."""
    try:
        written = write_reports(run_dir)
    except ReportError as exc:
        print(
            f"opro: warning: no report page: {exc} (`opro report {run_dir}` retries)",
            file=sys.stderr,
        )
        return
    print(_describe(run_dir, written))
