"""`--grading` and the two accuracies in `opro evaluate` and `opro optimize` output.

The task asks "valid or invalid?", so the simulated scorer answers "The answer is valid." or
"... invalid."; the reference rules count "invalid" correct for "valid" (a substring), the
strict ones do not, so the two accuracies differ and the test can tell which one ranks.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from opro.cli.main import main
from opro.providers.simulated import SimulatedProvider
from opro.tasks import grade, render_prompt

INSTRUCTIONS = ["", "Think.", "Be careful.", "Check each premise."]


@pytest.fixture
def valid_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "fallacies.jsonl"
    rows = [
        {"input": f"Argument {i}: is it valid or invalid?", "target": ("valid", "invalid")[i % 2]}
        for i in range(16)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def expected_accuracies(path: Path, instruction: str) -> tuple[float, float]:
    """Both accuracies computed apart from the engine: the simulated answers, graded."""
    model = SimulatedProvider("demo")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    answers = [
        (model.answer(render_prompt(instruction, r["input"], "Q_begin")), r["target"]) for r in rows
    ]
    strict = sum(grade(a, t) for a, t in answers) / len(rows)
    reference = sum(grade(a, t, rules="reference") for a, t in answers) / len(rows)
    return strict, reference


def test_evaluate_reports_both_accuracies_and_ranks_by_the_chosen_one(
    valid_jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    args = ["evaluate", "--task", str(valid_jsonl), "--scorer", "simulated/demo", "--no-cache"]
    for ins in INSTRUCTIONS:
        args += ["--instruction", ins]
    assert main([*args, "--grading", "reference", "--out", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    report = json.loads(out.read_text())
    assert report["grading"] == "reference"
    assert report["reference_grader_version"]
    expected = [expected_accuracies(valid_jsonl, ins) for ins in INSTRUCTIONS]
    got = [(e["accuracy"], e["accuracy_reference"]) for e in report["instructions"]]
    assert got == [pytest.approx(pair) for pair in expected]
    assert any(ref > strict for strict, ref in expected)  # the data shows the gap
    assert [e["truncated"] for e in report["instructions"]] == [0] * len(INSTRUCTIONS)
    # The table: a header naming the ranking, then both accuracies on every row.
    assert "strict" in table[0] and "reference" in table[0] and "best by reference" in table[0]
    rows = table[1 : 1 + len(INSTRUCTIONS)]
    for row, (strict, ref) in zip(rows, expected, strict=True):
        assert f"{100 * strict:5.1f}%" in row and f"{100 * ref:5.1f}%" in row


@pytest.mark.parametrize("grading", ["strict", "reference"])
def test_optimize_scores_by_the_chosen_grading_and_reports_both(
    valid_jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], grading: str
) -> None:
    run = tmp_path / "run"
    config = tmp_path / "run.toml"
    config.write_text(f'grading = "{grading}"\n')
    args = [
        "optimize", "--config", str(config), "--task", str(valid_jsonl),
        "--scorer", "simulated/s", "--optimizer", "simulated/o", "--steps", "2",
        "--train-fraction", "0.5", "--run-dir", str(run), "--cache-dir", str(tmp_path / "c"),
    ]  # fmt: skip
    assert main(args) == 0
    stdout = capsys.readouterr().out
    stored = orjson.loads((run / "config.json").read_bytes())
    assert stored["run"]["options"]["grading"] == grading
    records = [orjson.loads(line) for line in (run / "steps.jsonl").read_bytes().splitlines()]
    scored = [c for r in records for c in r["candidates"] if c["status"] in ("start", "new")]
    assert scored
    key = "accuracy" if grading == "strict" else "accuracy_reference"
    assert any(c["accuracy"] != c["accuracy_reference"] for c in scored)  # tells them apart
    for c in scored:
        assert c["score"] == c[key]
        assert c["truncated"] == 0
        assert c["detail"]["correct_reference"] == round(c["accuracy_reference"] * 8)
    results = orjson.loads((run / "results.json").read_bytes())
    for s in results["solutions"]:
        assert s["score"] == s[key] and "accuracy_reference" in s
    for row in results["final"]:
        assert row["train"] == row[key]["train"] and row["test"] == row[key]["test"]
        assert set(row["accuracy_reference"]) == {"train", "test"}
    summary = (run / "summary.txt").read_text()
    assert f"accuracy strict / reference (optimized by {grading})" in summary
    assert f"(optimized by {grading})" in stdout  # the command prints the summary
    # Resuming under the other grading would mix scores of two kinds: refused.
    other = "reference" if grading == "strict" else "strict"
    config.write_text(f'grading = "{other}"\n')
    assert main([*args, "--resume"]) == 2
    assert "options.grading" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["evaluate", "optimize"])
def test_an_unknown_grading_is_a_usage_error(
    command: str, valid_jsonl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--instruction", "x"] if command == "evaluate" else []
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--task", str(valid_jsonl), *extra, "--grading", "lenient"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice: 'lenient'" in err[0]
