"""Write the reports of a sweep directory or of a single run directory, from what is on disk.

`write_reports(directory)` reads everything first (`reading.read_report`; a missing or
malformed file is a `ReportError` naming it, and then nothing is written), then writes:

- a sweep: `table.md`, `table.csv`, `results.json` (sweep-level), `plots/*.png`, `report.html`;
- a single run: `plots/*.png` and `report.html` only (the run's own results.json is its own).

It works on a half-finished sweep: finished tasks show their results, the others their
status. Plots need matplotlib (the `reports` extra); without it they are skipped and the page
says so. Every file is replaced atomically (temporary file, then rename), so a reader never
sees half a page, and rerunning gives the same files for the same inputs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from opro.sweep import plots as plotting
from opro.sweep.model import Report, ReportError
from opro.sweep.page import Plot, render_html
from opro.sweep.reading import read_report
from opro.sweep.tables import render_csv, render_json, render_md

__all__ = ["ReportError", "write_reports"]

PLOTS = "plots"
ABLATION = "ablation.json"
NO_MATPLOTLIB = f"plots skipped: matplotlib is not installed ({plotting.INSTALL})"


def _write(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ReportError(f"cannot write {path}: {exc.strerror}") from None
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "task"


def make_plots(report: Report) -> tuple[list[Plot], list[str]]:
    """The plots of `report` and notes on the ones that could not be drawn."""
    if not plotting.available():
        return [], [NO_MATPLOTLIB]
    plots: list[Plot] = []
    notes: list[str] = []
    deltas = plotting.deltas_png(report)
    if deltas is not None:
        what = "the found instruction" if report.mode == "optimize" else "each instruction"
        plots.append(
            Plot(
                "deltas.png",
                f"{report.delta_split} accuracy of {what} minus each baseline, per finished "
                f"task ({report.grading} grading)",
                deltas,
                wide=True,
            )
        )
    elif report.pairs():
        notes.append("no finished task has accuracies to compare with the baselines yet")
    if report.mode == "optimize":
        for i, task in enumerate(report.tasks, start=1):
            png = plotting.curve_png(task, report.grading, report)
            if png is None:
                continue
            name = "curve.png" if report.kind == "run" else f"curve-{i:02d}-{_slug(task.dir)}.png"
            caption = (
                f"{task.task}: training accuracy of every scored candidate (dots) and the "
                "best so far (line)"
            )
            plots.append(Plot(name, caption, png))
    return plots, notes


def _remove_stale_plots(plot_dir: Path, current: set[str]) -> None:
    """Drop the plots an earlier report wrote that this one did not (a task's curve moves
    when tasks are added; a chart may have nothing to show now). Only our own file names."""
    if not plot_dir.is_dir():
        return
    for path in plot_dir.iterdir():
        ours = path.name == "deltas.png" or re.fullmatch(r"curve(-\d+-.+)?\.png", path.name)
        if ours and path.name not in current:
            path.unlink(missing_ok=True)


def write_reports(directory: Path) -> list[Path]:
    """Write the tables, plots and page of a sweep or run directory; return what was written."""
    directory = Path(directory)
    if (directory / ABLATION).exists():  # an ablation's comparison (`sweep.ablate_report`)
        from opro.sweep.ablate_report import write_ablation_reports

        return write_ablation_reports(directory)
    report = read_report(directory)
    plots, notes = make_plots(report)
    written: list[Path] = []
    if plots:
        plot_dir = directory / PLOTS
        try:
            plot_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise ReportError(f"cannot create {plot_dir}: {exc.strerror}") from None
        written += [_write(plot_dir / p.name, p.png) for p in plots]
    _remove_stale_plots(directory / PLOTS, {p.name for p in plots})
    if report.kind == "sweep":
        written.append(_write(directory / "table.md", render_md(report).encode()))
        written.append(_write(directory / "table.csv", render_csv(report).encode()))
        written.append(_write(directory / "results.json", render_json(report)))
    page = render_html(report, plots, notes).encode()
    written.append(_write(directory / "report.html", page))
    return written
