"""The report's plots as PNG bytes, drawn with matplotlib (the optional `reports` extra).

- `curve_png`: a task's training accuracy against the step, as in the paper's optimization
  curves: every scored candidate a dot, the best so far a line, the baselines dashed.
- `deltas_png`: per task, the test accuracy of the found instruction (evaluate mode: of each
  instruction) minus each baseline's, in points, as the paper's per-task bar charts.

Drawn with the object API on an Agg canvas (no pyplot, no global backend switch), so it is
safe beside other matplotlib users in the same process. Without matplotlib `available()` is
False and the caller skips the plots.
"""

from __future__ import annotations

import importlib.util
import io
from typing import Any, Literal

from opro.sweep.model import Report, TaskReport

INSTALL = "pip install 'opro-engine[reports]'"
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
_DPI = 100


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float, height: float, *, layout: Literal["constrained"] | None = None) -> Any:
    """A figure on its own Agg canvas; `layout="constrained"` fits labels of unknown width
    (it draws the figure twice, so fixed margins are used where the labels are known)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    out = io.BytesIO()
    # A fixed timestamp-free PNG: the same report gives the same bytes.
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def _plain(text: str) -> str:
    """Text matplotlib shows as is: `$` would start mathtext."""
    return text.replace("$", r"\$")


def curve_png(task: TaskReport, grading: str, report: Report) -> bytes | None:
    """Training accuracy (%) by step; None when nothing has been scored yet."""
    if not task.points:
        return None
    fig = _figure(5.0, 3.2)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.15, top=0.9)
    ax = fig.add_subplot()
    steps = [s for s, _ in task.points]
    scores = [100 * v for _, v in task.points]
    ax.scatter(steps, scores, s=14, alpha=0.45, color=_COLORS[0], label="candidate", lw=0)
    last = max([*steps, task.last_step or 0])
    best: list[float] = []  # the best so far at each step (NaN: nothing scored yet)
    running: float | None = None
    for step in range(last + 1):
        for s, v in zip(steps, scores, strict=True):
            if s == step and (running is None or v > running):
                running = v
        best.append(float("nan") if running is None else running)
    ax.plot(
        range(last + 1), best, drawstyle="steps-post", color=_COLORS[0], lw=2, label="best so far"
    )
    for i, column in enumerate(c for c in report.columns if c.baseline):
        acc = task.acc(column.key, "train")
        value = acc.by(grading) if acc else None
        if value is not None and task.finished:
            ax.axhline(100 * value, ls="--", lw=1, color=_COLORS[1 + i], label=_plain(column.label))
    ax.set_title(_plain(task.task), fontsize=11)
    ax.set_xlabel("step")
    ax.set_ylabel(f"train accuracy, {grading} (%)")
    ax.set_xlim(-0.5, max(last, 1) + 0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    low, high = min(scores), max(scores)
    ax.set_ylim(max(-2.0, low - 5), min(102.0, high + 5))  # dots at 0 or 100 stay visible
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def deltas_png(report: Report) -> bytes | None:
    """Grouped horizontal bars of the deltas; None when no finished task has one."""
    pairs = report.pairs()
    split, grading = report.delta_split, report.grading
    rows = [
        (t.task, [t.delta(c.key, b.key, split, grading) for c, b in pairs])
        for t in report.tasks
        if t.finished
    ]
    rows = [(name, values) for name, values in rows if any(v is not None for v in values)]
    if not rows or not pairs:
        return None
    rows.reverse()  # matplotlib draws the first row at the bottom; read top-down
    band = 0.8 / len(pairs)
    fig = _figure(7.0, 1.6 + len(rows) * max(0.32, 0.2 * len(pairs)), layout="constrained")
    ax = fig.add_subplot()
    for j, (column, base) in enumerate(pairs):
        offset = -0.4 + band * (len(pairs) - 1 - j + 0.5)  # the first pair on top
        bars = [(i + offset, 100 * v) for i, (_, vs) in enumerate(rows) if (v := vs[j]) is not None]
        label = f"vs {base.label}"
        if report.mode != "optimize":
            label = f"{column.label} {label}"
        drawn = ax.barh(
            [y for y, _ in bars],
            [v for _, v in bars],
            height=band * 0.9,
            color=_COLORS[j % len(_COLORS)],
            label=label,
        )
        ax.bar_label(drawn, fmt="%+.1f", fontsize=7, padding=2)
    # Symmetric about 0 and at least +-5 points, so small or zero differences look small.
    widest = max(abs(100 * v) for _, vs in rows for v in vs if v is not None)
    ax.set_xlim(-max(5.0, 1.2 * widest), max(5.0, 1.2 * widest))
    ax.set_yticks(range(len(rows)), [_plain(name) for name, _ in rows], fontsize=9)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(f"{split} accuracy difference, {grading} (points)")
    what = "found instruction" if report.mode == "optimize" else "instruction"
    ax.set_title(f"{what} minus baseline, per task", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(fontsize=8, loc="outside lower center", ncols=min(4, len(pairs)), frameon=False)
    return _png(fig)
