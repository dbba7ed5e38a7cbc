"""The comparison of an ablation: per value the mean, sample standard deviation, min and max of
its finished repeats; curves are the best-so-far by step; unfinished arms show their status,
never zeros; without matplotlib the tables and page are still written; a damaged plan is a
one-line error naming the file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from opro.cli.main import main
from opro.engine.budget import Budget
from opro.engine.engine import Engine
from opro.optimize.loop import OptimizeConfig
from opro.sweep import ModelSettings, ProblemSettings, SweepSettings
from opro.sweep import plots as plotting
from opro.sweep.ablate_report import Spread, best_so_far, read_comparison
from opro.sweep.ablate_run import AblationResult, ablate
from opro.sweep.model import ReportError
from opro.sweep.report import write_reports
from opro.sweep.state import SweepError


def test_spread_is_mean_sample_std_min_and_max() -> None:
    s = Spread.of([0.5, 0.7, 0.9])
    assert s is not None
    assert (s.n, s.low, s.high) == (3, 0.5, 0.9)
    assert math.isclose(s.mean, 0.7) and math.isclose(s.std, 0.2)  # sqrt((.04+0+.04)/2)
    assert s.text() == "70.0 ± 20.0 [50.0-90.0]"
    one = Spread.of([0.25])
    assert one is not None and one.std == 0.0 and one.text() == "25.0"
    assert Spread.of([]) is None


def test_best_so_far_carries_the_best_forward_and_scales_x() -> None:
    points = [(0, 0.4), (1, 0.3), (1, 0.6), (3, 0.5)]
    assert best_so_far(points, 1) == [(0, 0.4), (1, 0.6), (2, 0.6), (3, 0.6)]
    assert best_so_far(points, 4) == [(0, 0.4), (4, 0.6), (8, 0.6), (12, 0.6)]
    assert best_so_far([], 1) == []


def sim_settings() -> SweepSettings:
    return SweepSettings(
        patterns=("bbh/navigate",),
        scorer=ModelSettings("simulated/s"),
        optimizer=ModelSettings("simulated/o"),
        optimize=OptimizeConfig(steps=2, candidates_per_step=2, test_top=1),
        problem=ProblemSettings(train_fraction=0.1, test_limit=10),
        max_parallel_tasks=1,
    )


async def simulated(tmp_path: Path, name: str, budget: Budget | None = None) -> AblationResult:
    settings = sim_settings()
    async with Engine(cache_dir=tmp_path / f"{name}-cache", budget=budget or Budget()) as e:
        return await ablate(e, settings, "order", "ascending,descending", repeats=2,
                            run_dir=tmp_path / name)  # fmt: skip


async def test_a_stopped_ablation_shows_each_arms_status_and_only_finished_accuracies(
    tmp_path: Path, data_dir: Path
) -> None:
    result = await simulated(tmp_path, "stopped", Budget(max_tokens=9000))
    assert result.stopped == "budget"
    summary = json.loads((tmp_path / "stopped" / "results.json").read_text())
    statuses = [a["status"] for a in summary["arms"]]
    assert "done" in statuses and "stopped" in statuses, statuses
    for arm in summary["arms"]:
        assert (arm["train"] is None) == (arm["status"] != "done")
    for value in summary["values"]:
        done = value["done"]
        assert (value["train"] or {"n": 0})["n"] == done
    md = (tmp_path / "stopped" / "table.md").read_text()
    assert "| stopped |" in md or "| pending |" in md


async def test_without_matplotlib_the_tables_and_page_are_still_written(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await simulated(tmp_path, "abl")
    directory = tmp_path / "abl"
    (directory / "curves.png").unlink(missing_ok=True)
    monkeypatch.setattr(plotting, "available", lambda: False)
    written = {p.name for p in write_reports(directory)}
    assert written == {"table.md", "table.csv", "results.json", "report.html"}
    assert not (directory / "curves.png").exists()
    page = (directory / "report.html").read_text()
    assert "plots skipped: matplotlib is not installed" in page
    assert "<h2>Ablation: order</h2>" in page and "order=descending/rep1" in page


async def test_a_damaged_plan_is_one_line_naming_it(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await simulated(tmp_path, "abl")
    plan = tmp_path / "abl" / "ablation.json"
    data = json.loads(plan.read_text())
    data["arms"][1]["repeat"] = -1
    plan.write_text(json.dumps(data))
    with pytest.raises(ReportError, match="arm order=ascending/rep1 repeat"):
        read_comparison(tmp_path / "abl")
    assert main(["report", str(tmp_path / "abl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ablation.json" in err
    plan.write_text("{")
    assert main(["report", str(tmp_path / "abl")]) == 2
    assert "ablation.json" in capsys.readouterr().err


async def test_a_resume_whose_record_names_other_arms_is_refused(
    tmp_path: Path, data_dir: Path
) -> None:
    await simulated(tmp_path, "abl")
    path = tmp_path / "abl" / "sweep.json"
    record = json.loads(path.read_text())
    record["tasks"][0]["task"] = "order=sideways/rep0"
    path.write_text(json.dumps(record))
    async with Engine(cache_dir=tmp_path / "abl-cache") as engine:
        with pytest.raises(SweepError, match="name different arms"):
            await ablate(engine, sim_settings(), run_dir=tmp_path / "abl", resume=True)
