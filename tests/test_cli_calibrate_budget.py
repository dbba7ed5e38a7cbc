"""`--calibrate` on a resumed run pays inside the run's budget: the sample is taken after the
ledger's earlier spend is loaded, so the run total stays under the cap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opro.cli.main import main


def run_total(run_dir: Path) -> int:
    settled = json.loads((run_dir / "spend.json").read_text())["settled"]
    return int(settled["tokens_in"]) + int(settled["tokens_out"])


def test_a_calibration_sample_on_resume_cannot_spend_past_the_run_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    args = ["optimize", "--task", "bbh/navigate", "--scorer", "simulated/s"]
    args += ["--optimizer", "simulated/o", "--steps", "3", "--candidates-per-step", "2"]
    args += ["--test-limit", "4", "--run-dir", str(run_dir), "--cache-dir", str(tmp_path / "c")]
    args += ["--budget-tokens", "1500", "--max-tokens", "16"]
    assert main(args) == 3  # stopped by the budget, resumable
    first = run_total(run_dir)
    assert 0 < first <= 1500
    capsys.readouterr()
    # 40 fresh pairs would cost far more than what is left. The sample used to be taken
    # before the run's ledger was open (an internal error on resume); it is now paid inside
    # the run's budget, so it stops at the cap like any other call.
    assert main([*args, "--resume", "--calibrate", "40"]) == 3
    assert "internal error" not in capsys.readouterr().err
    assert first <= run_total(run_dir) <= 1500


def test_calibrate_with_batch_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", "--task", "bbh/navigate", "--instruction", "", "--split", "train"]
    args += ["--scorer", "openai/gpt-4o-mini", "--batch", "--run-dir", str(tmp_path / "b")]
    assert main([*args, "--calibrate", "5"]) == 2
    err = capsys.readouterr().err
    assert "--calibrate pays live calls" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
