"""`report.html`: one self-contained page with the table, the plots and the best instructions.

Self-contained means it opens from disk anywhere, offline: CSS inline, plots embedded as
base64 `data:` URIs, no script, no font or image from the network. Its Content-Security-Policy
forbids scripts and every remote load, so even a mistake in escaping could not run anything.
Every text that comes from a file (task names, reasons, settings, and above all instructions,
which are model output) goes through `html.escape`.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

from opro.sweep.model import Acc, Report, TaskReport
from opro.sweep.tables import (
    cost_cells,
    delta_text,
    legend,
    pct,
    settings_line,
    title,
)

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass(frozen=True, slots=True)
class Plot:
    """A PNG for the page, with what it shows."""

    name: str
    caption: str
    png: bytes
    wide: bool = False


_CSS = """
:root { color-scheme: light; --ink: #1d2330; --muted: #667085; --line: #d9dee7;
  --head: #f3f5f9; --good: #0b7a3b; --bad: #b42318; }
* { box-sizing: border-box; }
body { margin: 0; padding: 20px 24px 40px; font: 15px/1.45 system-ui, -apple-system,
  "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink); background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 8px; border-bottom: 1px solid var(--line);
  padding-bottom: 4px; }
h3 { font-size: 16px; margin: 20px 0 6px; }
p { margin: 6px 0; }
.muted, .legend { color: var(--muted); font-size: 13px; }
.totals { display: flex; flex-wrap: wrap; gap: 10px; margin: 16px 0 0; padding: 0; }
.totals div { border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px;
  background: var(--head); min-width: 120px; }
.totals dt { font-size: 12px; color: var(--muted); }
.totals dd { margin: 0; font-size: 18px; font-weight: 600; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 14px; }
table.main { font-size: 13px; }
table.main thead tr + tr th { white-space: normal; min-width: 56px; max-width: 88px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; vertical-align: top; }
th { background: var(--head); font-weight: 600; text-align: center; white-space: nowrap; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.task { white-space: nowrap; font-weight: 600; }
tbody tr:nth-child(even) { background: #fafbfc; }
.ref { display: block; color: var(--muted); font-size: 12px; }
td.na { color: var(--muted); font-size: 13px; text-align: left; }
.pos { color: var(--good); } .neg { color: var(--bad); }
.status { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 12px;
  font-weight: 600; background: #eef0f4; }
.status-done { background: #dcfae6; color: #085d3a; }
.status-failed { background: #fee4e2; color: #912018; }
.status-stopped, .status-unfinished { background: #fef0c7; color: #93370d; }
.status-running { background: #d1e9ff; color: #194185; }
.why { display: block; color: var(--muted); font-size: 12px; max-width: 360px; white-space: normal;
  overflow-wrap: anywhere; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr));
  gap: 16px; }
figure { margin: 0; }
figure img { width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figure.wide img { max-width: 760px; }
figcaption { font-size: 13px; color: var(--muted); }
td.ins { white-space: pre-wrap; overflow-wrap: anywhere; max-width: 640px;
  font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; }
.empty { font-style: italic; color: var(--muted); font-family: system-ui, sans-serif; }
.note { background: #fffaeb; border: 1px solid #fedf89; border-radius: 6px; padding: 6px 10px; }
"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _acc_html(acc: Acc | None) -> str:
    if acc is None or (acc.strict is None and acc.reference is None):
        return "-"
    if acc.reference is None:
        return pct(acc.strict)
    return f'{pct(acc.strict)}<span class="ref">{pct(acc.reference)}</span>'


def _delta_html(strict: float | None, reference: float | None) -> str:
    if strict is None:
        return "-"
    tone = "pos" if strict > 0 else "neg" if strict < 0 else ""
    ref = "" if reference is None else f'<span class="ref">{delta_text(reference)}</span>'
    return f'<span class="{tone}">{delta_text(strict)}</span>{ref}'


def _badge(t: TaskReport) -> str:
    return f'<span class="status status-{_e(t.status)}">{_e(t.status)}</span>'


def _status_html(t: TaskReport, *, table: bool = True) -> str:
    """The status badge; its reason and progress too, except in a table row without results
    (they fill the row's accuracy cells there)."""
    extras = [x for x in (t.reason, t.progress) if x]
    if not extras or (table and not t.finished):
        return _badge(t)
    return f'{_badge(t)}<span class="why">{_e("; ".join(extras))}</span>'


def _no_results(t: TaskReport) -> str:
    extras = "; ".join(x for x in (t.reason, t.progress) if x)
    return f"no results: {t.status}" + (f" ({extras})" if extras else "")


def _instruction_html(text: str) -> str:
    return '<span class="empty">(the empty instruction)</span>' if text == "" else _e(text)


def _cost_html(t: TaskReport) -> list[str]:
    """calls, cache hits, tokens (in over out), USD."""
    calls, hits, _, usd = (_e(x) for x in cost_cells(t))
    if t.cost is None:
        return [calls, hits, "-", usd]
    tokens = f'{t.cost.tokens_in:,}<span class="ref">{t.cost.tokens_out:,}</span>'
    return [calls, hits, tokens, usd]


def _main_table(report: Report) -> str:
    pairs = report.pairs()
    n = len(report.columns)
    top = ['<th rowspan="2">task</th>', '<th rowspan="2">status</th>']
    top += [f'<th colspan="{n}">{_e(s)} accuracy (%)</th>' for s in report.splits]
    if pairs:
        top.append(f'<th colspan="{len(pairs)}">Δ {_e(report.delta_split)} (points)</th>')
    top.append('<th colspan="4">cost</th>')
    sub = [f"<th>{_e(c.label)}</th>" for _ in report.splits for c in report.columns]
    for c, b in pairs:
        sub.append(
            f"<th>vs {_e(b.label)}</th>"
            if report.mode == "optimize"
            else (f"<th>{_e(c.label)} vs {_e(b.label)}</th>")
        )
    sub += ["<th>calls</th>", "<th>cache hits</th>", "<th>tokens<br>in / out</th>", "<th>USD</th>"]
    body = []
    for t in report.tasks:
        cells = [f'<td class="task">{_e(t.task)}</td>', f"<td>{_status_html(t)}</td>"]
        if t.finished:
            cells += [
                f'<td class="num">{_acc_html(t.acc(c.key, s))}</td>'
                for s in report.splits
                for c in report.columns
            ]
            for c, b in pairs:
                d = [t.delta(c.key, b.key, report.delta_split, g) for g in ("strict", "reference")]
                cells.append(f'<td class="num">{_delta_html(*d)}</td>')
        else:  # one cell across the accuracies: a task without results shows no numbers
            span = len(report.splits) * n + len(pairs)
            cells.append(f'<td class="na" colspan="{span}">{_e(_no_results(t))}</td>')
        cells += [f'<td class="num">{x}</td>' for x in _cost_html(t)]
        body.append(f'<tr data-task="{_e(t.task)}">{"".join(cells)}</tr>')
    return (
        '<div class="scroll"><table class="main"><thead>'
        f"<tr>{''.join(top)}</tr><tr>{''.join(sub)}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _instruction_legend(report: Report) -> str:
    """What the numbered instruction columns of an evaluate sweep are."""
    named = [c for c in report.columns if not c.baseline and c.text is not None]
    if not named:
        return ""
    rows = "".join(
        f'<tr><td>{_e(c.label)}</td><td class="ins">{_instruction_html(c.text or "")}</td></tr>'
        for c in named
    )
    return (
        '<h3>Instructions</h3><table class="legend-table"><thead><tr><th>column</th>'
        f"<th>instruction</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _totals(report: Report) -> str:
    t = report.totals
    rate = t.cache_hit_rate
    items = [
        ("calls", f"{t.spend.calls:,}"),
        ("cache hits", f"{t.cache_hits:,}" + ("" if rate is None else f" ({100 * rate:.1f}%)")),
        ("answered 429", "-" if t.n429 is None else f"{t.n429:,}"),
        ("tokens in + out", f"{t.spend.tokens_in:,} + {t.spend.tokens_out:,}"),
        ("cost", f"${t.spend.cost_usd:.4f}"),
        ("wall time", "-" if t.wall_s is None else f"{t.wall_s:,.1f} s"),
    ]
    counts = report.status_counts()
    items.append(("tasks", ", ".join(f"{n} {s}" for s, n in counts.items()) or "none"))
    cells = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in items)
    source = f"Totals from {t.source}; cache hits as a share of results looked up (hits + calls)."
    return f'<dl class="totals">{cells}</dl><p class="muted">{_e(source)}</p>'


def _figure(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    cls = ' class="wide"' if plot.wide else ""
    return (
        f'<figure{cls}><img src="data:image/png;base64,{data}" alt="{_e(plot.caption)}">'
        f"<figcaption>{_e(plot.caption)}</figcaption></figure>"
    )


def _best(report: Report) -> str:
    parts = []
    splits = ["train", "validation", "test", *report.splits]
    for t in report.tasks:
        parts.append(f"<h3>{_e(t.task)} {_status_html(t, table=False)}</h3>")
        if not t.shown:
            parts.append('<p class="muted">no instruction scored yet</p>')
            continue
        used = [s for s in dict.fromkeys(splits) if any(s in x.scores for x in t.shown)]
        head = "".join(f"<th>{_e(s)} (%)</th>" for s in used)
        rows = []
        for shown in t.shown:
            cells = "".join(f'<td class="num">{_acc_html(shown.scores.get(s))}</td>' for s in used)
            rows.append(
                f"<tr><td>{_e(shown.role)}</td>{cells}"
                f'<td class="ins">{_instruction_html(shown.text)}</td></tr>'
            )
        parts.append(
            f'<div class="scroll"><table class="best"><thead><tr><th>role</th>{head}'
            f"<th>instruction</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        )
    return "".join(parts)


def render_html(
    report: Report,
    plots: list[Plot],
    notes: list[str],
    *,
    heading: str | None = None,
    lead: str = "",
) -> str:
    """The whole page; `notes` say why plots are missing (e.g. matplotlib not installed).
    `heading` replaces the title, `lead` (HTML, already escaped) goes before the per-task
    table: an ablation's comparison uses both."""
    wide = [p for p in plots if p.wide]
    grid = [p for p in plots if not p.wide]
    plot_html = "".join(f'<p class="note">{_e(n)}</p>' for n in notes)
    plot_html += "".join(_figure(p) for p in wide)
    if grid:
        plot_html += f'<div class="plots">{"".join(_figure(p) for p in grid)}</div>'
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(heading or title(report))}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(heading or title(report))}</h1>"
        f'<p class="muted">{_e(settings_line(report))}</p>'
        f"{_totals(report)}{lead}"
        f'<h2>Per task</h2><p class="legend">{_e(legend(report, stacked=True))}</p>'
        f"{_main_table(report)}{_instruction_legend(report)}"
        f"<h2>Plots</h2>{plot_html or '<p class=muted>nothing to plot yet</p>'}"
        f"<h2>Best instructions</h2>{_best(report)}"
        '<p class="muted">Written by <code>opro report</code> from the files on disk.</p>'
        "</body></html>\n"
    )
