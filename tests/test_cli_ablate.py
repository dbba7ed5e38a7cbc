"""`opro ablate` from the command line: a bad axis or value is one line before anything is
created or paid, an ablation on the fake server (its responder scripts the optimizer) writes
the arms' run directories and the comparison, `opro report` rebuilds it, and `--resume` with
only the directory pays nothing again."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opro.cli.main import main
from opro.testing.process import ServerProcess

SERVER = Path(__file__).parent / "sweep" / "test_ablate_http.py"
SIM = ["--scorer", "simulated/s", "--optimizer", "simulated/o"]
SMALL = ["--steps", "2", "--candidates-per-step", "2", "--test-top", "1", "--test-limit", "4"]


def one_line_error(code: int, err: str, message: str) -> None:
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("opro: error: "), err
    assert message in err, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["depth", "--values", "1,2"], "unknown ablation axis 'depth'; use one of order,"),
        (["exemplars", "--values", "0,x"], "axis exemplars: bad value 'x'; allowed: an integer"),
        (["buckets", "--values", "none,0"], "axis buckets: bad value '0'; allowed: none or"),
        (["per-step", "--values", "1,3", "--total-candidates", "8"], "3 does not divide"),
        (["one-shot", "--values", "on,twice"], "axis one-shot: bad value 'twice'"),
        (["temperature", "--values", "0.5,3"], "axis temperature: bad value '3'"),
        (["start", "--values", "nowhere.txt"], "axis start: cannot read nowhere.txt"),
        (["order", "--values", "ascending", "--total-candidates", "8"], "applies to the per-step"),
        (["exemplars"], "give the values of exemplars with --values"),
        (["--values", "0,3"], "give the axis to ablate: one of order, buckets"),
        (["exemplars", "--values", "0", "--task", "bbh/navigat"], "unknown task 'bbh/navigat'"),
        (["exemplars", "--values", "0", "--task", ""], "give --task"),
        (["exemplars", "--values", "0", "--batch"], "opro ablate does not send batches yet"),
    ],
)
def test_user_errors_are_one_line_and_nothing_is_created(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "ablation"
    task = [] if "--task" in args else ["--task", "bbh/navigate"]
    argv = ["ablate", *args, *task, *SIM, "--run-dir", str(run_dir)]
    code = main([*argv, "--cache-dir", str(tmp_path / "c")])
    one_line_error(code, capsys.readouterr().err, message)
    assert not run_dir.exists() and not (tmp_path / "c").exists()


def test_the_strategy_axis_runs_opro_ga_and_de_under_one_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """OPRO vs EvoPrompt GA vs DE: each arm runs its own strategy (recorded in its run
    directory), and the step-0 scores the arms share are paid for once."""
    run_dir = tmp_path / "a"
    argv = ["ablate", "strategy", "--values", "opro,evoprompt-ga,evoprompt-de"]
    argv += ["--task", "bbh/navigate", *SIM, *SMALL, "--run-dir", str(run_dir)]
    assert main([*argv, "--cache-dir", str(tmp_path / "c")]) == 0, capsys.readouterr().err
    for value in ("opro", "evoprompt-ga", "evoprompt-de"):
        config = json.loads(
            (run_dir / "arms" / f"strategy={value}" / "rep0" / "config.json").read_text()
        )
        assert config["run"]["options"]["strategy"] == value
    with open(run_dir / "table.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["value"] for r in table] == ["opro", "evoprompt-ga", "evoprompt-de"]
    assert {r["status"] for r in table} == {"done"}
    assert sum(int(r["saved_scorer"]) for r in table) > 0  # step 0 scored once for all


def test_dry_run_lists_the_arms(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["ablate", "per-step", "--values", "1,4", "--total-candidates", "8", "--repeats", "2"]
    code = main([*argv, "--task", "bbh/navigate", *SIM, "--dry-run", "--seed", "3"])
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        "per-step=1/rep0: 8 steps x 1 candidates, seed 3",
        "per-step=1/rep1: 8 steps x 1 candidates, seed 4",
        "per-step=4/rep0: 2 steps x 4 candidates, seed 3",
        "per-step=4/rep1: 2 steps x 4 candidates, seed 4",
    ]


@pytest.fixture
def fake() -> Iterator[ServerProcess]:
    server = ServerProcess(command=[sys.executable, str(SERVER)])
    yield server
    server.close()


@pytest.mark.requires_extra("matplotlib")
def test_an_ablation_on_the_fake_server_then_report_and_resume(
    fake: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = tmp_path / "parity.jsonl"
    rows = [
        {"input": f"[p] Is {i} even?", "target": "Yes" if i % 2 == 0 else "No"} for i in range(24)
    ]
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "ablation"
    argv = ["ablate", "exemplars", "--values", "0,3", "--repeats", "2", "--task", str(task)]
    argv += ["--scorer", "openai/fake-model", "--scorer-base-url", fake.base_url]
    argv += ["--optimizer", "openai/fake-model", "--optimizer-base-url", fake.base_url]
    argv += [*SMALL, "--train-fraction", "0.5", "--max-tokens", "16"]
    argv += ["--run-dir", str(run_dir), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert "started exemplars=0/rep0 (new)" in err and "done exemplars=3/rep1" in err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["value", "done"]
    assert lines[1].startswith("exemplars=0  2/2") and lines[2].startswith("exemplars=3  2/2")
    assert "requests served from results another arm paid for:" in out
    paid = fake.stats()["accepted"]

    arms = ["exemplars=0/rep0", "exemplars=0/rep1", "exemplars=3/rep0", "exemplars=3/rep1"]
    for arm in arms:  # ordinary run directories
        assert (run_dir / "arms" / arm / "results.json").exists()
        assert (run_dir / "arms" / arm / "steps.jsonl").exists()
    with open(run_dir / "table.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["arm"] for r in table] == arms and {r["status"] for r in table} == {"done"}
    assert sum(int(r["calls"]) for r in table) == paid  # what the server answered
    results = json.loads((run_dir / "results.json").read_text())
    assert [v["value"] for v in results["values"]] == ["0", "3"]
    assert all(v["train"]["n"] == 2 and v["test"]["n"] == 2 for v in results["values"])
    saved = sum(int(r["saved_scorer"]) + int(r["saved_optimizer"]) for r in table)
    assert saved == results["sharing"]["saved"] > 0
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (run_dir / "report.html").read_text()
    assert "<h2>Ablation: exemplars</h2>" in page and "data:image/png;base64," in page
    assert "exemplars=3/rep1" in page
    md = (run_dir / "table.md").read_text()
    assert md.count("| exemplars=") == 2 + 4  # one row per value, then one per arm

    # `opro report` rebuilds the comparison from the files (nothing is run or paid).
    (run_dir / "table.md").unlink()
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "table.md").read_text() == md
    assert "<h2>Ablation: exemplars</h2>" in (run_dir / "report.html").read_text()

    # A dry run of the resume lists the stored arms and sends nothing.
    capsys.readouterr()
    assert main(["ablate", "--resume", "--run-dir", str(run_dir), "--dry-run"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed == [f"{arm}: 2 steps x 2 candidates, seed {arm[-1]}" for arm in arms]
    # Resume with only the directory: everything is done, nothing is paid again.
    assert main(["ablate", "--resume", "--run-dir", str(run_dir)]) == 0, capsys.readouterr()
    assert fake.stats()["accepted"] == paid
    assert json.loads((run_dir / "results.json").read_text())["sharing"] == results["sharing"]
