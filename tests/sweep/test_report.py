"""`opro report` / `write_reports`: tables, results.json, plots and page from what is on disk.

The expected numbers come from the run directories' own files (results.json, steps.jsonl,
spend.json, report.json), never from the report code, so a report that misreads a file fails.
"""

from __future__ import annotations

import base64
import csv
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from opro.cli.main import main
from opro.optimize.problem import THINK_STEP_BY_STEP
from opro.optimize.runlog import read_steps
from opro.sweep import plots
from opro.sweep.reading import read_report
from opro.sweep.report import write_reports

from .conftest import HALF, TOTALS, entry, evaluate, optimize, write_sweep

SPEND_KEYS = ("calls", "tokens_in", "tokens_out", "cost_usd")


class Page(HTMLParser):
    """The parts of report.html the tests look at."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def rows(self) -> list[str]:
        """The tasks of the main table's rows, in order."""
        return [str(a["data-task"]) for tag, a in self.tags if tag == "tr" and "data-task" in a]

    def images(self) -> list[str]:
        return [str(a.get("src")) for tag, a in self.tags if tag == "img"]


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if "plots skipped" not in line]
    assert len(lines) == 1, err
    return lines[0]


def _md_rows(root: Path) -> dict[str, list[str]]:
    lines = (root / "table.md").read_text(encoding="utf-8").splitlines()
    rows = [line.strip("| ").split(" | ") for line in lines if line.startswith("| bbh")]
    return {row[0].replace("\\_", "_"): row for row in rows}


def _by_column(run: Path) -> dict[str, dict[str, Any]]:
    """The rows of a run's final table the report's columns stand for."""
    rows = _json(run / "results.json")["final"]
    return {
        "found": next(r for r in rows if r["role"] == "top 1"),
        "empty": next(r for r in rows if r["solution"] == ""),
        "step": next(r for r in rows if r["solution"] == THINK_STEP_BY_STEP),
    }


def test_a_finished_sweep_reports_each_task_from_its_run(
    finished_sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(finished_sweep)]) == 0
    assert f"report: {finished_sweep / 'report.html'}" in capsys.readouterr().out
    out = _json(finished_sweep / "results.json")
    # Alphabetical, as the paper's per-task tables, whatever the order in sweep.json.
    assert [t["task"] for t in out["tasks"]] == ["bbh/navigate", "bbh/sports_understanding"]
    for task in out["tasks"]:
        run = finished_sweep / task["dir"]
        rows = _by_column(run)
        assert task["status"] == "done" and task["found"] == rows["found"]["solution"]
        for key, row in rows.items():
            for split in ("train", "test"):
                assert task["accuracy"][key][split] == {
                    "strict": row["accuracy"][split],
                    "reference": row["accuracy_reference"][split],
                }
        for base in ("empty", "step"):
            for grading, field in (("strict", "accuracy"), ("reference", "accuracy_reference")):
                expected = rows["found"][field]["test"] - rows[base][field]["test"]
                assert task["delta"][f"found_vs_{base}"][grading] == pytest.approx(expected)
        totals = _json(run / "results.json")["totals"]
        for key in (*SPEND_KEYS, "cache_hits"):
            assert task[key] == totals[key]
    totals = out["totals"]
    assert {k: totals[k] for k in TOTALS} == TOTALS
    assert totals["cache_hit_rate"] == pytest.approx(79 / (79 + 4321))
    assert totals["source"] == "sweep.json" and totals["tasks"] == {"done": 2}

    md = _md_rows(finished_sweep)
    assert sorted(md) == ["bbh/navigate", "bbh/sports_understanding"]
    nav = _by_column(finished_sweep / "bbh__navigate")["step"]
    cell = f"{100 * nav['accuracy']['test']:.1f} / {100 * nav['accuracy_reference']['test']:.1f}"
    assert md["bbh/navigate"][7] == cell  # test accuracy of "Let's think step by step."
    table = (finished_sweep / "table.md").read_text(encoding="utf-8")
    assert "4,321 calls" in table and "5 answered 429" in table and "$0.7500" in table

    with open(finished_sweep / "table.csv", newline="", encoding="utf-8") as fh:
        records = list(csv.DictReader(fh))
    assert [r["task"] for r in records] == ["bbh/navigate", "bbh/sports_understanding", "(total)"]
    for record, task in zip(records, out["tasks"], strict=False):
        assert float(record["test_found_strict"]) == task["accuracy"]["found"]["test"]["strict"]
        assert int(record["calls"]) == task["calls"]
    assert int(records[-1]["calls"]) == TOTALS["calls"]

    page = Page((finished_sweep / "report.html").read_text(encoding="utf-8"))
    assert page.rows() == ["bbh/navigate", "bbh/sports_understanding"]


def test_a_half_finished_sweep_shows_status_not_zeros(half_sweep: Path) -> None:
    write_reports(half_sweep)
    out = {t["task"]: t for t in _json(half_sweep / "results.json")["tasks"]}
    assert {name: t["status"] for name, t in out.items()} == {e["task"]: e["status"] for e in HALF}
    for name in ("bbh/date_understanding", "bbh/sports_understanding", "bbh/word_sorting"):
        assert out[name]["accuracy"] is None and out[name]["delta"] is None
    assert out["bbh/navigate"]["accuracy"]["found"]["test"]["strict"] is not None

    # The running task: how far it got (the torn last line ignored) and what it paid so far.
    running = half_sweep / "bbh__date_understanding"
    records, _ = read_steps(running / "steps.jsonl")
    assert out["bbh/date_understanding"]["progress"] == f"{records[-1]['step']} of 3 steps logged"
    settled = _json(running / "spend.json")["settled"]
    assert {k: out["bbh/date_understanding"][k] for k in SPEND_KEYS} == settled
    assert out["bbh/date_understanding"]["best"][0]["role"] == "best 1 so far"
    # Failed and pending tasks: their reason, no numbers at all.
    assert out["bbh/word_sorting"]["reason"] == HALF[3]["reason"]
    for name in ("bbh/word_sorting", "bbh/snarks"):
        assert all(out[name][k] is None for k in (*SPEND_KEYS, "cache_hits"))

    md = _md_rows(half_sweep)
    assert len(md) == len(HALF)
    for name in ("bbh/date_understanding", "bbh/sports_understanding", "bbh/word_sorting"):
        assert md[name][2:10] == ["-"] * 8, md[name]  # accuracies and deltas
    assert md["bbh/snarks"][1:] == ["pending"] + ["-"] * 12
    assert "line 3 is not valid JSON" in md["bbh/word_sorting"][1]
    assert "the sweep's budget ran out" in md["bbh/sports_understanding"][1]

    page = Page((half_sweep / "report.html").read_text(encoding="utf-8"))
    assert page.rows() == sorted(e["task"] for e in HALF)
    assert any("no results: failed" in text for text in page.text)


def test_the_curves_hold_every_scored_candidate(half_sweep: Path) -> None:
    report = read_report(half_sweep)
    for task in report.tasks:
        if task.status not in ("done", "running"):
            continue
        records, _ = read_steps(half_sweep / task.dir / "steps.jsonl")
        expected = [
            (r["step"], c["score"])
            for r in records
            for c in r["candidates"]
            if c["status"] in ("start", "new") and c["score"] is not None
        ]
        assert task.points == expected and len(expected) > 1
        assert task.last_step == records[-1]["step"]


def test_an_evaluate_sweep_compares_each_instruction_with_the_baselines(
    tmp_path: Path, data_dir: Path
) -> None:
    given = ["Read the question twice.", "", THINK_STEP_BY_STEP]
    root = tmp_path / "transfer"
    for task in ("bbh/navigate", "bbh/snarks"):
        evaluate(data_dir, task, root / task.replace("/", "__") / "report.json", given)
    tasks = [entry("bbh/navigate", "done"), entry("bbh/snarks", "done")]
    write_sweep(root, "evaluate", [*tasks, entry("bbh/boolean_expressions", "running")])
    write_reports(root)
    out = _json(root / "results.json")
    assert [c["instruction"] for c in out["columns"]] == given
    assert out["delta_split"] == "eval"  # sweep.json's settings name no split
    for task in out["tasks"][1:]:
        items = _json(root / task["dir"] / "report.json")["instructions"]
        acc = {i["instruction"]: i for i in items}
        assert task["accuracy"]["i1"]["eval"]["strict"] == acc[given[0]]["accuracy"]
        for key, text in (("empty", ""), ("step", THINK_STEP_BY_STEP)):
            expected = acc[given[0]]["accuracy"] - acc[text]["accuracy"]
            assert task["delta"][f"i1_vs_{key}"]["strict"] == pytest.approx(expected)
    assert out["tasks"][0]["status"] == "running" and out["tasks"][0]["accuracy"] is None
    assert "Read the question twice." in (root / "table.md").read_text(encoding="utf-8")


def test_opro_optimize_writes_its_page(runs: dict[str, Path]) -> None:
    for run in runs.values():  # finished and budget-stopped runs alike
        page = Page((run / "report.html").read_text(encoding="utf-8"))
        assert len(page.rows()) == 1


def test_report_on_a_single_run_writes_only_the_page_and_plots(
    tmp_path: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run = Path(shutil.copytree(runs["bbh/navigate"], tmp_path / "run"))
    shutil.rmtree(run / "plots", ignore_errors=True)
    (run / "report.html").unlink()
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(["report", str(run)]) == 0
    assert f"report: {run / 'report.html'}" in capsys.readouterr().out
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert set(after) - set(before) == {"report.html"}
    assert all(after[name] == data for name, data in before.items())  # results.json untouched
    page = Page(after["report.html"].decode())
    assert page.rows() == ["bbh/navigate"]
    found = _by_column(run)["found"]
    text = (run / "report.html").read_text(encoding="utf-8")
    assert f"{100 * found['accuracy']['test']:.1f}" in text


HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)> & ]]>"


def test_instructions_and_reasons_are_escaped(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "hostile"
    optimize(data_dir, "bbh/navigate", root / "bbh__navigate", "--start", HOSTILE)
    evaluate(data_dir, "bbh/navigate", tmp_path / "eval" / "bbh__navigate" / "report.json",
             [HOSTILE, ""])  # fmt: skip
    bad = entry("bbh/snarks", "failed", f"model said {HOSTILE}")
    write_sweep(root, "optimize", [entry("bbh/navigate", "done"), bad])
    write_sweep(tmp_path / "eval", "evaluate", [entry("bbh/navigate", "done")])
    for directory in (root, tmp_path / "eval", root / "bbh__navigate"):
        write_reports(directory)
        text = (directory / "report.html").read_text(encoding="utf-8")
        page = Page(text)
        assert not [t for t, _ in page.tags if t == "script"]
        assert not [a for _, attrs in page.tags for a in attrs if a.startswith("on")]
        assert [src for src in page.images() if not src.startswith("data:image/png;base64,")] == []
        assert HOSTILE in "".join(page.text)  # shown literally
    table = (root / "table.md").read_text(encoding="utf-8")
    assert "<script>" not in table and "\\<script\\>" in table


def _damage_sweep(root: Path, what: str) -> Path:
    """Break one file of a finished sweep; return the file the error must name."""
    sweep = root / "sweep.json"
    nav = root / "bbh__navigate"
    if what == "sweep not json":
        sweep.write_text("{not json")
        return sweep
    data = _json(sweep)
    if what == "sweep version":
        data["version"] = 2
    elif what == "dir outside":
        data["tasks"][0]["dir"] = "../elsewhere"
    elif what == "bad status":
        data["tasks"][0]["status"] = "finished"
    elif what == "totals NaN-like":
        data["totals"]["cost_usd"] = -1
    if what in ("sweep version", "dir outside", "bad status", "totals NaN-like"):
        sweep.write_text(json.dumps(data))
        return sweep
    results = nav / "results.json"
    if what == "results missing":
        results.unlink()
        return results
    if what == "results not json":
        results.write_text('{"final": [')
        return results
    if what in ("accuracy too big", "accuracy text"):
        body = _json(results)
        body["final"][0]["accuracy"]["test"] = 1.5 if what == "accuracy too big" else "high"
        results.write_text(json.dumps(body))
        return results
    steps = nav / "steps.jsonl"  # "steps damaged": a complete line in the middle
    lines = steps.read_text().splitlines()
    steps.write_text("\n".join([lines[0], "[1, 2]", *lines[1:]]) + "\n")
    return steps


@pytest.mark.parametrize(
    "what",
    [
        "sweep not json",
        "sweep version",
        "dir outside",
        "bad status",
        "totals NaN-like",
        "results missing",
        "results not json",
        "accuracy too big",
        "accuracy text",
        "steps damaged",
    ],
)
def test_a_damaged_file_is_one_line_naming_it(
    what: str, finished_sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _damage_sweep(finished_sweep, what)
    assert main(["report", str(finished_sweep)]) == 2
    line = _one_line(capsys)
    assert line.startswith("opro: error: ") and str(path) in line, line
    assert not (finished_sweep / "report.html").exists()  # nothing half-written


def test_damaged_files_of_unfinished_tasks_and_reports_are_named(
    half_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = half_sweep / "bbh__date_understanding" / "spend.json"
    ledger.write_text('{"format": 1, "settled": {"calls": "many"}}')
    assert main(["report", str(half_sweep)]) == 2
    assert str(ledger) in _one_line(capsys)

    root = tmp_path / "ev"
    (root / "t").mkdir(parents=True)
    (root / "t" / "report.json").write_text('{"totals": {}}')
    write_sweep(root, "evaluate", [{**entry("t", "done"), "dir": "t"}])
    assert main(["report", str(root)]) == 2
    assert str(root / "t" / "report.json") in _one_line(capsys)

    assert main(["report", str(tmp_path / "nothing-here")]) == 2
    assert "is not a directory" in _one_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "holds neither a sweep (sweep.json) nor" in _one_line(capsys)


def test_without_matplotlib_the_tables_and_page_are_still_written(
    finished_sweep: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(plots, "available", lambda: False)
    assert main(["report", str(finished_sweep)]) == 0
    assert "plots skipped: matplotlib is not installed" in capsys.readouterr().err
    assert not (finished_sweep / "plots").exists()
    text = (finished_sweep / "report.html").read_text(encoding="utf-8")
    assert "plots skipped" in text and Page(text).images() == []
    assert (finished_sweep / "table.md").exists() and (finished_sweep / "table.csv").exists()


@pytest.mark.requires_extra("matplotlib")
def test_the_plots_are_pngs_embedded_in_the_page(half_sweep: Path) -> None:
    written = write_reports(half_sweep)
    pngs = sorted(p for p in written if p.suffix == ".png")
    # The bar chart, and a curve for each task with a scored step (done, running, stopped).
    assert [p.name for p in pngs] == [
        "curve-01-bbh__date_understanding.png",
        "curve-02-bbh__navigate.png",
        "curve-04-bbh__sports_understanding.png",
        "deltas.png",
    ]
    page = Page((half_sweep / "report.html").read_text(encoding="utf-8"))
    embedded = sorted(base64.b64decode(src.split(",", 1)[1]) for src in page.images())
    assert embedded == sorted(p.read_bytes() for p in pngs)
    assert all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)

    # A rebuild drops the plots of an earlier report that it did not write, and only those.
    (half_sweep / "plots" / "curve-09-gone.png").write_bytes(b"old")
    (half_sweep / "plots" / "mine.png").write_bytes(b"a user's file")
    write_reports(half_sweep)
    names = sorted(p.name for p in (half_sweep / "plots").iterdir())
    assert names == sorted([p.name for p in pngs] + ["mine.png"])
