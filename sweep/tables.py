"""The report's tables as text: `table.md` (people), `table.csv` (spreadsheets), `results.json`.

Laid out like the paper's per-task BBH tables: one row per task (alphabetical), the accuracy
of the found instruction beside the empty instruction and "Let's think step by step." on the
training and the test split, and the difference on test. Every accuracy is given by our
strict rules and by the paper's reference rules. A task that has not finished shows its
status, reason and progress in place of accuracies, never zeros; what it paid is shown.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

from opro.sweep.model import Acc, Report, TaskReport, Totals

RESULTS_VERSION = 1
_SPEND_KEYS = ("calls", "tokens_in", "tokens_out", "cost_usd")


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def acc_text(acc: Acc | None) -> str:
    """'58.0 / 57.5' (strict / reference), '58.0' with no reference, '-' when unknown."""
    if acc is None or (acc.strict is None and acc.reference is None):
        return "-"
    if acc.reference is None:
        return pct(acc.strict)
    return f"{pct(acc.strict)} / {pct(acc.reference)}"


def delta_text(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}"


def status_text(t: TaskReport) -> str:
    """'done', or e.g. 'failed: <reason>', 'running: 4 of 20 steps logged'."""
    extras = [x for x in (t.reason, t.progress) if x]
    return f"{t.status}: {'; '.join(extras)}" if extras else t.status


def cost_cells(t: TaskReport) -> list[str]:
    """calls, cache hits, tokens in + out, USD: '-' for what is unknown."""
    if t.cost is None:
        return ["-", "-" if t.cache_hits is None else f"{t.cache_hits:,}", "-", "-"]
    return [
        f"{t.cost.calls:,}",
        "-" if t.cache_hits is None else f"{t.cache_hits:,}",
        f"{t.cost.tokens_in:,} + {t.cost.tokens_out:,}",
        f"{t.cost.cost_usd:.4f}",
    ]


def totals_text(report: Report) -> str:
    t: Totals = report.totals
    rate = t.cache_hit_rate
    parts = [
        f"{t.spend.calls:,} calls",
        f"{t.cache_hits:,} cache hits"
        + ("" if rate is None else f" ({100 * rate:.1f}% of results looked up)"),
        "429s not recorded" if t.n429 is None else f"{t.n429:,} answered 429",
        f"{t.spend.tokens_in:,} + {t.spend.tokens_out:,} tokens",
        f"${t.spend.cost_usd:.4f}",
        "wall time not recorded" if t.wall_s is None else f"wall {t.wall_s:,.1f} s",
    ]
    counts = ", ".join(f"{n} {status}" for status, n in report.status_counts().items())
    return f"{' · '.join(parts)} (from {t.source}); tasks: {counts}"


def headers(report: Report) -> list[str]:
    """The table's column titles (the same in table.md and on the page)."""
    accs = [f"{split} {c.label}" for split in report.splits for c in report.columns]
    deltas = [f"Δ {report.delta_split} {c.label} vs {b.label}" for c, b in report.pairs()]
    if report.mode == "optimize":
        deltas = [f"Δ {report.delta_split} vs {b.label}" for _, b in report.pairs()]
    return ["task", "status", *accs, *deltas, "calls", "cache hits", "tokens in + out", "USD"]


def row_cells(report: Report, t: TaskReport) -> list[str]:
    """One task's cells: accuracies and deltas only once it has finished."""
    done = t.finished
    accs = [
        acc_text(t.acc(c.key, split)) if done else "-"
        for split in report.splits
        for c in report.columns
    ]
    deltas = []
    for c, b in report.pairs():
        pair = [t.delta(c.key, b.key, report.delta_split, g) for g in ("strict", "reference")]
        if not done or pair[0] is None:
            deltas.append("-")
        elif pair[1] is None:
            deltas.append(delta_text(pair[0]))
        else:
            deltas.append(f"{delta_text(pair[0])} / {delta_text(pair[1])}")
    return [t.task, status_text(t), *accs, *deltas, *cost_cells(t)]


def legend(report: Report, *, stacked: bool = False) -> str:
    """What the table's cells mean; `stacked`: the page shows reference under strict."""
    what = (
        "the found instruction minus each baseline"
        if report.mode == "optimize"
        else ("each instruction minus each baseline")
    )
    both = "strict, with the reference below in grey" if stacked else "strict / reference"
    return (
        "Accuracy in %: by our strict rules and by the paper's code's reference rules "
        f"({both}). Δ: {report.delta_split} accuracy of {what}, in points. A task that has "
        "not finished shows its status instead of accuracies."
    )


# --- table.md -------------------------------------------------------------------------------

_MD_SPECIAL = set("\\`*_[]<>|~&#!")


def md(text: str) -> str:
    """Literal text inside a Markdown table cell: punctuation escaped, one line."""
    flat = " ".join(text.splitlines()) if text else text
    return "".join(f"\\{ch}" if ch in _MD_SPECIAL else ch for ch in flat)


def instruction_md(text: str) -> str:
    return "*(the empty instruction)*" if text == "" else f"“{md(text)}”"


def settings_line(report: Report) -> str:
    shown = [
        f"{k}: {v}" for k, v in report.settings.items() if isinstance(v, str | int | float | bool)
    ]
    return " · ".join([f"mode: {report.mode}", *shown])


def title(report: Report) -> str:
    what = "sweep" if report.kind == "sweep" else "run"
    return f"OPRO {what}: {report.directory.resolve().name}"


def render_md(report: Report) -> str:
    head = headers(report)
    lines = [
        f"# {md(title(report))}",
        "",
        md(settings_line(report)),
        "",
        legend(report),
        "",
        "| " + " | ".join(md(h) for h in head) + " |",
        "|" + "|".join([":---", ":---"] + ["---:"] * (len(head) - 2)) + "|",
    ]
    for t in report.tasks:
        lines.append("| " + " | ".join(md(c) for c in row_cells(report, t)) + " |")
    lines += ["", f"**Totals**: {md(totals_text(report))}"]
    if report.mode == "optimize":
        found = [t for t in report.tasks if t.finished and t.found is not None]
        if found:
            lines += ["", "## Found instructions", ""]
            lines += [f"- {md(t.task)}: {instruction_md(t.found or '')}" for t in found]
    else:
        lines += ["", "## Instructions", ""]
        lines += [
            f"- {c.label}: {instruction_md(c.text or '')}" for c in report.columns if not c.baseline
        ]
    return "\n".join(lines) + "\n"


# --- table.csv ------------------------------------------------------------------------------


def _csv_text(text: str) -> str:
    """Text a spreadsheet will not run as a formula."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _num(x: float | int | None) -> str:
    return "" if x is None else repr(x)


def render_csv(report: Report) -> str:
    """Fractions (0 to 1), one row per task, then a row of the sweep totals."""
    accs = [(split, c) for split in report.splits for c in report.columns]
    split = report.delta_split
    names = ["task", "dir", "status", "reason", "progress"]
    names += [f"{s}_{c.key}_{g}" for s, c in accs for g in ("strict", "reference")]
    names += [
        f"delta_{split}_{c.key}_vs_{b.key}_{g}"
        for c, b in report.pairs()
        for g in ("strict", "reference")
    ]
    names += ["calls", "cache_hits", "tokens_in", "tokens_out", "cost_usd"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for t in report.tasks:
        done = t.finished
        row = [_csv_text(x or "") for x in (t.task, t.dir, t.status, t.reason, t.progress)]
        for s, c in accs:
            acc = t.acc(c.key, s) if done else None
            row += [_num(acc.strict if acc else None), _num(acc.reference if acc else None)]
        for c, b in report.pairs():
            row += [
                _num(t.delta(c.key, b.key, split, g) if done else None)
                for g in ("strict", "reference")
            ]
        spend = t.cost
        row += [
            _num(spend.calls if spend else None),
            _num(t.cache_hits),
            _num(spend.tokens_in if spend else None),
            _num(spend.tokens_out if spend else None),
            _num(spend.cost_usd if spend else None),
        ]
        writer.writerow(row)
    tot = report.totals
    blank = [""] * (len(names) - 10)
    paid = tot.spend
    head = ["(total)", "", "", f"from {tot.source}", "", *blank]
    writer.writerow(
        [*head, paid.calls, tot.cache_hits, paid.tokens_in, paid.tokens_out, paid.cost_usd]
    )
    return out.getvalue()


# --- results.json ---------------------------------------------------------------------------


def _acc_json(acc: Acc | None) -> dict[str, float | None] | None:
    return None if acc is None else {"strict": acc.strict, "reference": acc.reference}


def results_dict(report: Report) -> dict[str, Any]:
    """The sweep-level results.json: the table's numbers, machine-readable."""
    split = report.delta_split
    tasks = []
    for t in report.tasks:
        done = t.finished
        tasks.append(
            {
                "task": t.task,
                "dir": t.dir,
                "status": t.status,
                "reason": t.reason,
                "progress": t.progress,
                "grading": t.grading,
                "found": t.found if done else None,
                "accuracy": {
                    c.key: {s: _acc_json(t.acc(c.key, s)) for s in report.splits}
                    for c in report.columns
                }
                if done
                else None,
                "delta": {
                    f"{c.key}_vs_{b.key}": {
                        g: t.delta(c.key, b.key, split, g) for g in ("strict", "reference")
                    }
                    for c, b in report.pairs()
                }
                if done
                else None,
                "best": [
                    {"role": s.role, "instruction": s.text}
                    | {k: _acc_json(v) for k, v in s.scores.items()}
                    for s in t.shown
                ],
                **(t.cost.to_dict() if t.cost else dict.fromkeys(_SPEND_KEYS)),
                "cache_hits": t.cache_hits,
            }
        )
    tot = report.totals
    return {
        "version": RESULTS_VERSION,
        "kind": report.kind,
        "mode": report.mode,
        "splits": report.splits,
        "delta_split": split,
        "columns": [
            {"key": c.key, "label": c.label, "instruction": c.text, "baseline": c.baseline}
            for c in report.columns
        ],
        "tasks": tasks,
        "totals": {
            **tot.spend.to_dict(),
            "cache_hits": tot.cache_hits,
            "cache_hit_rate": tot.cache_hit_rate,
            "n429": tot.n429,
            "wall_s": tot.wall_s,
            "source": tot.source,
            "tasks": report.status_counts(),
        },
    }


def render_json(report: Report) -> bytes:
    return orjson.dumps(results_dict(report), option=orjson.OPT_INDENT_2) + b"\n"
