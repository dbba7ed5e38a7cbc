"""A run directory written by an earlier version resumes, and re-pays nothing it recorded.

`tests/fixtures/run_f0edf59` was written by commit f0edf59 (see its README) and stopped after
step 1 of 2. Its config.json predates options added since (grading, protocol, exemplar
selection, extraction, resample_invalid): a key missing there stands for the option's default,
the behaviour that run had, so the same command with `--resume` continues it. The scorer and
optimizer are `simulated/...` with no cache, so any recorded work paid again would show up
as a request.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from opro.cli.main import main
from opro.optimize.loop import OptimizeConfig, option_defaults
from opro.optimize.runlog import config_differences
from opro.providers.simulated import SimulatedProvider
from opro.providers.types import Completion, Request
from opro.tasks import load_task, split
from opro.tasks.prompts import render_prompt

FIXTURE = Path(__file__).parent / "fixtures" / "run_f0edf59"
ARGS = [
    "optimize", "--task", "synthetic/boolean_expressions", "--scorer", "simulated/s",
    "--optimizer", "simulated/o", "--steps", "2", "--candidates-per-step", "2",
    "--train-fraction", "0.1", "--test-limit", "10", "--test-top", "1", "--no-qa", "--no-cache",
]  # fmt: skip


def test_a_run_written_by_an_earlier_version_resumes_without_paying_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    before = (run / "steps.jsonl").read_text().splitlines()
    old = [json.loads(line) for line in before]
    assert [r["step"] for r in old] == [0, 1]
    assert "grading" not in json.loads((run / "config.json").read_text())["run"]["options"]

    sent: list[tuple[str, str]] = []
    complete = SimulatedProvider.complete

    async def counting(self: SimulatedProvider, request: Request) -> Completion:
        sent.append((self.model, request.as_text()))
        return await complete(self, request)

    monkeypatch.setattr(SimulatedProvider, "complete", counting)
    assert main([*ARGS, "--resume", "--run-dir", str(run)]) == 0, capsys.readouterr().err

    after = (run / "steps.jsonl").read_text().splitlines()
    assert after[:2] == before and json.loads(after[2])["step"] == 2
    # The optimizer was asked for step 2 only; step 1's proposals came from the log.
    assert [model for model, _ in sent].count("o") == 1
    # No solution scored in steps 0 and 1 was sent again on the training examples.
    train = split(load_task("synthetic/boolean_expressions"), train_fraction=0.1).train
    recorded = {
        c["canonical"] for r in old for c in r["candidates"] if c["status"] in ("start", "new")
    }
    paid_before = {
        render_prompt(ins, ex.input, "Q_begin", qa_framing=False)
        for ins in recorded
        for ex in train
    }
    assert recorded and not paid_before & {prompt for _, prompt in sent}
    # The run's totals are what the old steps recorded plus what this session paid.
    results = json.loads((run / "results.json").read_text())
    earlier = sum(r["totals"]["calls"] for r in old)
    assert results["totals"]["calls"] == earlier + len(sent)
    assert results["steps_completed"] == 2


@pytest.mark.parametrize("key", sorted(option_defaults()))
def test_every_option_missing_from_an_old_config_reads_as_its_default(key: str) -> None:
    """Central, not per option: any option a config.json lacks matches its default only."""
    new = json.loads(json.dumps({"options": asdict(OptimizeConfig())}))
    old = json.loads(json.dumps(new))
    *parents, leaf = key.split(".")
    table: Any = old
    for name in parents:
        table = table[name]
    del table[leaf]
    assert config_differences(old, new, added=option_defaults()) == []
    table = new
    for name in parents:
        table = table[name]
    table[leaf] = "another value"
    assert [d[0] for d in config_differences(old, new, added=option_defaults())] == [key]
