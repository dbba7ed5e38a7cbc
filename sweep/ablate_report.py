"""The comparison an ablation directory gets: curves.png, table.md, table.csv, results.json
and report.html, from what is on disk (`opro report DIR` rebuilds them; nothing is paid).

Inputs: ablation.json (the arms and their values), sweep.json and each arm's run directory
(read by `reading.read_sweep`, as a sweep's tasks) and sharing.json (requests saved by
sharing). Per value, over its repeats: the found instruction's final train and test accuracy
(by the grading the runs optimized) as mean, sample standard deviation, min and max; calls
paid, requests served from the cache, and how many of those another arm had paid for. Only
finished arms count towards a value's accuracy; unfinished ones are listed with their status.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from opro.sweep import plots as plotting
from opro.sweep.ablate_run import PLAN, read_plan
from opro.sweep.ablate_share import ROLES, SHARING, SharingError, read_sharing
from opro.sweep.model import Report, ReportError, TaskReport
from opro.sweep.page import Plot, render_html
from opro.sweep.reading import FOUND, read_sweep
from opro.sweep.report import NO_MATPLOTLIB, _write
from opro.sweep.state import SweepError
from opro.sweep.tables import md, pct

CURVES = "curves.png"
_X_BY_CANDIDATES = ("per-step", "one-shot")  # arms with different step counts


@dataclass(frozen=True, slots=True)
class Spread:
    """Mean, sample standard deviation (0 for one value), min and max of fractions."""

    n: int
    mean: float
    std: float
    low: float
    high: float

    @classmethod
    def of(cls, xs: Sequence[float]) -> Spread | None:
        if not xs:
            return None
        mean = sum(xs) / len(xs)
        var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0
        return cls(len(xs), mean, math.sqrt(var), min(xs), max(xs))

    def text(self) -> str:
        if self.n == 1:
            return pct(self.mean)
        return (
            f"{100 * self.mean:.1f} ± {100 * self.std:.1f} "
            f"[{100 * self.low:.1f}-{100 * self.high:.1f}]"
        )

    def to_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "mean": self.mean, "std": self.std, "min": self.low, "max": self.high}


@dataclass(slots=True)
class ArmRow:
    name: str
    label: str
    repeat: int
    seed: int
    candidates_per_step: int
    task: TaskReport | None
    saved: dict[str, int]

    @property
    def status(self) -> str:
        return self.task.status if self.task is not None else "pending"

    def acc(self, split: str, grading: str) -> float | None:
        if self.task is None or not self.task.finished:
            return None
        found = self.task.acc(FOUND.key, split)
        return found.by(grading) if found is not None else None

    @property
    def calls(self) -> int | None:
        cost = self.task.cost if self.task is not None else None
        return cost.calls if cost is not None else None

    @property
    def cache_hits(self) -> int | None:
        return self.task.cache_hits if self.task is not None else None


@dataclass(slots=True)
class Comparison:
    directory: Path
    axis: str
    values: list[str]
    arms: list[ArmRow]
    report: Report
    sharing_known: bool

    def of(self, label: str) -> list[ArmRow]:
        return [a for a in self.arms if a.label == label]

    def spread(self, label: str, split: str) -> Spread | None:
        found = [a.acc(split, self.report.grading) for a in self.of(label)]
        return Spread.of([x for x in found if x is not None])

    def saved(self, role: str | None = None) -> int:
        roles = ROLES if role is None else (role,)
        return sum(a.saved.get(r, 0) for a in self.arms for r in roles)


def _int(value: Any, path: Path, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ReportError(f"{path}: {what} is not a non-negative integer")
    return value


def read_comparison(directory: Path) -> Comparison:
    try:
        plan = read_plan(directory)
    except SweepError as exc:
        raise ReportError(str(exc)) from None
    report = read_sweep(directory)
    by_name = {t.task: t for t in report.tasks}
    saved: dict[str, Any] = {}
    sharing_path = directory / SHARING
    if sharing_path.exists():
        try:
            saved = read_sharing(sharing_path)["saved"]
        except SharingError as exc:
            raise ReportError(str(exc)) from None
    path = directory / PLAN
    rows = []
    for i, arm in enumerate(plan["arms"]):
        if not isinstance(arm, dict) or not isinstance(arm.get("name"), str):
            raise ReportError(f"{path}: arm {i} has no name")
        name = arm["name"]
        rows.append(
            ArmRow(
                name=name,
                label=str(arm.get("label")),
                repeat=_int(arm.get("repeat"), path, f"arm {name} repeat"),
                seed=_int(arm.get("seed"), path, f"arm {name} seed"),
                candidates_per_step=_int(
                    arm.get("candidates_per_step"), path, f"arm {name} candidates_per_step"
                ),
                task=by_name.get(name),
                saved={r: int(saved.get(name, {}).get(r, 0)) for r in ROLES},
            )
        )
    values = [str(v) for v in plan["values"]]
    return Comparison(directory, plan["axis"], values, rows, report, sharing_path.exists())


# --- the curves -----------------------------------------------------------------------------


def best_so_far(points: Sequence[tuple[int, float]], scale: int) -> list[tuple[int, float]]:
    """(x, best training score up to step x) for every step logged; x = step x `scale`."""
    if not points:
        return []
    last = max(s for s, _ in points)
    out, best = [], -math.inf
    by_step: dict[int, float] = {}
    for step, score in points:
        by_step[step] = max(score, by_step.get(step, -math.inf))
    for step in range(last + 1):
        best = max(best, by_step.get(step, -math.inf))
        if best > -math.inf:
            out.append((step * scale, best))
    return out


def curves(c: Comparison) -> dict[str, list[tuple[int, float, float, float]]]:
    """Per value: (x, mean, min, max) of the repeats' best-so-far curves at each x."""
    scaled = c.axis in _X_BY_CANDIDATES
    out: dict[str, list[tuple[int, float, float, float]]] = {}
    for label in c.values:
        series = [
            dict(best_so_far(a.task.points, a.candidates_per_step if scaled else 1))
            for a in c.of(label)
            if a.task is not None and a.task.points
        ]
        xs = sorted({x for s in series for x in s})
        rows = []
        for x in xs:
            ys = [s[x] for s in series if x in s]
            rows.append((x, sum(ys) / len(ys), min(ys), max(ys)))
        if rows:
            out[label] = rows
    return out


def curves_png(c: Comparison) -> bytes | None:
    data = curves(c)
    if not data:
        return None
    fig = plotting._figure(6.4, 3.8)
    fig.subplots_adjust(left=0.11, right=0.78, bottom=0.14, top=0.9)
    ax = fig.add_subplot()
    for i, (label, rows) in enumerate(data.items()):
        color = plotting._COLORS[i % len(plotting._COLORS)]
        xs = [r[0] for r in rows]
        ax.plot(xs, [100 * r[1] for r in rows], color=color, label=plotting._plain(label))
        ax.fill_between(
            xs, [100 * r[2] for r in rows], [100 * r[3] for r in rows], color=color, alpha=0.2
        )
    by = "candidates asked" if c.axis in _X_BY_CANDIDATES else "step"
    ax.set_xlabel(by)
    ax.set_ylabel("best training accuracy (%)")
    ax.set_title(plotting._plain(f"{c.axis}: mean over repeats, band min-max"), fontsize=10)
    ax.legend(title=c.axis, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(alpha=0.3)
    return plotting._png(fig)


# --- the tables -----------------------------------------------------------------------------


def _opt(x: int | None) -> str:
    return "-" if x is None else str(x)


def _sum(xs: Sequence[int | None]) -> int | None:
    known = [x for x in xs if x is not None]
    return sum(known) if known else None


def value_rows(c: Comparison) -> list[list[str]]:
    rows = []
    for label in c.values:
        arms = c.of(label)
        done = sum(a.status == "done" for a in arms)
        train, test = c.spread(label, "train"), c.spread(label, "test")
        rows.append(
            [
                f"{c.axis}={label}",
                f"{done}/{len(arms)}",
                train.text() if train else "-",
                test.text() if test else "-",
                _opt(_sum([a.calls for a in arms])),
                _opt(_sum([a.cache_hits for a in arms])),
                str(sum(sum(a.saved.values()) for a in arms)),
            ]
        )
    return rows


VALUE_HEAD = [
    "value",
    "done",
    "train acc (%)",
    "test acc (%)",
    "calls paid",
    "served from cache",
    "of which paid by another arm",
]
ARM_HEAD = [
    "arm",
    "status",
    "seed",
    "train (%)",
    "test (%)",
    "calls paid",
    "served from cache",
    "saved by sharing",
]


def arm_cells(c: Comparison, a: ArmRow) -> list[str]:
    g = c.report.grading
    return [
        a.name,
        a.status,
        str(a.seed),
        pct(a.acc("train", g)),
        pct(a.acc("test", g)),
        _opt(a.calls),
        _opt(a.cache_hits),
        str(sum(a.saved.values())),
    ]


def sharing_text(c: Comparison) -> str:
    if not c.sharing_known:
        return "requests saved by sharing: not recorded (no sharing.json)"
    return (
        f"requests served from results another arm paid for: {c.saved()} "
        f"(scorer {c.saved('scorer')}, optimizer {c.saved('optimizer')}); "
        f"calls paid in all: {c.report.totals.spend.calls}"
    )


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(md(h) for h in head) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|")
    lines += ["| " + " | ".join(md(x) for x in row) + " |" for row in rows]
    return lines


def render_md(c: Comparison) -> str:
    lines = [
        f"# OPRO ablation: {md(c.axis)} ({md(c.directory.resolve().name)})",
        "",
        f"Accuracy of the found instruction by {c.report.grading} grading: mean ± standard "
        "deviation [min-max] over the finished repeats.",
        "",
        *_md_table(VALUE_HEAD, value_rows(c)),
        "",
        "## Arms",
        "",
        *_md_table(ARM_HEAD, [arm_cells(c, a) for a in c.arms]),
        "",
        md(sharing_text(c)),
    ]
    return "\n".join(lines) + "\n"


def render_csv(c: Comparison) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["arm", "value", "repeat", "seed", "status", "train", "test", "calls",
                     "cache_hits", "saved_scorer", "saved_optimizer", "found"])  # fmt: skip
    g = c.report.grading
    for a in c.arms:
        found = a.task.found if a.task is not None and a.task.finished else None
        train, test = a.acc("train", g), a.acc("test", g)
        writer.writerow(
            [a.name, a.label, a.repeat, a.seed, a.status,
             "" if train is None else f"{train:.6f}", "" if test is None else f"{test:.6f}",
             _opt(a.calls).replace("-", ""), _opt(a.cache_hits).replace("-", ""),
             a.saved["scorer"], a.saved["optimizer"],
             "" if found is None else _csv_safe(found)]
        )  # fmt: skip
    return out.getvalue()


def _csv_safe(text: str) -> str:
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def results_dict(c: Comparison) -> dict[str, Any]:
    g = c.report.grading
    values = []
    for label in c.values:
        arms = c.of(label)
        train, test = c.spread(label, "train"), c.spread(label, "test")
        values.append(
            {
                "value": label,
                "arms": len(arms),
                "done": sum(a.status == "done" for a in arms),
                "train": train.to_dict() if train else None,
                "test": test.to_dict() if test else None,
                "calls": _sum([a.calls for a in arms]),
                "cache_hits": _sum([a.cache_hits for a in arms]),
                "saved_by_sharing": sum(sum(a.saved.values()) for a in arms),
            }
        )
    t = c.report.totals
    return {
        "axis": c.axis,
        "grading": g,
        "values": values,
        "arms": [
            {
                "arm": a.name,
                "value": a.label,
                "repeat": a.repeat,
                "seed": a.seed,
                "status": a.status,
                "train": a.acc("train", g),
                "test": a.acc("test", g),
                "calls": a.calls,
                "cache_hits": a.cache_hits,
                "saved_by_sharing": a.saved,
                "found": a.task.found if a.task is not None and a.task.finished else None,
            }
            for a in c.arms
        ],
        "sharing": {
            "recorded": c.sharing_known,
            "saved": c.saved(),
            "saved_scorer": c.saved("scorer"),
            "saved_optimizer": c.saved("optimizer"),
        },
        "totals": {
            "calls": t.spend.calls,
            "cache_hits": t.cache_hits,
            "tokens_in": t.spend.tokens_in,
            "tokens_out": t.spend.tokens_out,
            "cost_usd": t.spend.cost_usd,
        },
    }


def lead_html(c: Comparison) -> str:
    """The comparison section of report.html (escaped here)."""

    def table(head: list[str], rows: list[list[str]]) -> str:
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        body = "".join(
            "<tr>"
            + "".join(
                f"<td{'' if i == 0 else ' class=num'}>{html.escape(x)}</td>"
                for i, x in enumerate(row)
            )
            + "</tr>"
            for row in rows
        )
        head_html = f"<thead><tr>{th}</tr></thead>"
        return f'<div class="scroll"><table>{head_html}<tbody>{body}</tbody></table></div>'

    note = (
        f"Accuracy of the found instruction by {c.report.grading} grading: mean ± standard "
        "deviation [min-max] over the finished repeats."
    )
    return (
        f"<h2>Ablation: {html.escape(c.axis)}</h2>"
        f'<p class="legend">{html.escape(note)}</p>{table(VALUE_HEAD, value_rows(c))}'
        f'<p class="muted">{html.escape(sharing_text(c))}</p>'
        f"<h3>Arms</h3>{table(ARM_HEAD, [arm_cells(c, a) for a in c.arms])}"
    )


# --- writing --------------------------------------------------------------------------------


def write_ablation_reports(directory: Path) -> list[Path]:
    """Read everything, then write curves.png (with matplotlib), the tables and the page."""
    directory = Path(directory)
    c = read_comparison(directory)
    plots, notes = [], []
    written: list[Path] = []
    if not plotting.available():
        notes.append(NO_MATPLOTLIB)
    else:
        png = curves_png(c)
        if png is None:
            (directory / CURVES).unlink(missing_ok=True)
            notes.append("no arm has scored an instruction yet")
        else:
            by = "candidates asked" if c.axis in _X_BY_CANDIDATES else "step"
            caption = (
                f"best training accuracy so far by {by}, per value of {c.axis}: the mean over "
                "repeats (line) and their min-max (band)"
            )
            plots.append(Plot(CURVES, caption, png, wide=True))
            written.append(_write(directory / CURVES, png))
    written.append(_write(directory / "table.md", render_md(c).encode()))
    written.append(_write(directory / "table.csv", render_csv(c).encode()))
    results = orjson.dumps(results_dict(c), option=orjson.OPT_INDENT_2) + b"\n"
    written.append(_write(directory / "results.json", results))
    heading = f"OPRO ablation of {c.axis}: {directory.resolve().name}"
    page = render_html(c.report, plots, notes, heading=heading, lead=lead_html(c))
    written.append(_write(directory / "report.html", page.encode()))
    return written
