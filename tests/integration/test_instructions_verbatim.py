"""What reaches the scorer is the instruction as given; proposals are polished as the paper does.

`opro evaluate` (library and CLI) must send a typed instruction byte for byte (`**`,
newlines, a lowercase start, trailing spaces) and merge two instructions only when the
prompts sent would be identical; so must `opro optimize` for its starting instructions. The
optimizer loop still polishes its own proposals (`engine.candidates`) and deduplicates them
by the polished text, and the run log shows the text that was scored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import opro
from opro.engine.engine import Engine
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Model
from opro.optimize.loop import OptimizeConfig, optimize
from opro.optimize.problem import PromptProblem
from opro.optimize.runlog import read_steps
from opro.providers.base import Provider
from opro.providers.types import Completion, Request, Usage
from opro.tasks import load_task, split
from opro.testing.fake_openai import FakeOpenAIServer
from opro.testing.process import ServerProcess

EXAMPLES = [opro.Example(f"Is {i} even?", "True" if i % 2 == 0 else "False") for i in range(6)]
TYPED = [
    "Note: 2**3 means power",
    "Note: 23 means power",  # what the old canonical form sent for the first one
    "note: 2**3 means power",  # differs only in case
    "First line.\nsecond line,  spaced ",  # a newline, a lowercase start, trailing spaces
]


class AnyGrader:
    version = "test-any"

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        return prediction == example.target


def sent_prompt(instruction: str, question: str) -> str:
    """The Q_begin prompt without Q:/A: framing (the default, as in the paper's code), spelled
    out here rather than rendered."""
    return instruction + "\n" + question


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer() as srv:
        yield srv


async def test_evaluate_sends_each_typed_instruction_verbatim(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        scorer = engine.model("openai/fake-model", base_url=server.base_url)
        report = await engine.evaluate(TYPED, EXAMPLES, scorer, grader=AnyGrader())
    expected = {sent_prompt(ins, ex.input) for ins in TYPED for ex in EXAMPLES}
    assert set(server.prompt_counts) == expected
    assert all(count == 1 for count in server.prompt_counts.values())
    # None of them is a duplicate of another: four instructions, four times the calls.
    assert [s.duplicate_of for s in report.instructions] == [None] * len(TYPED)
    assert [s.instruction for s in report.instructions] == TYPED
    assert [s.canonical for s in report.instructions] == TYPED
    assert report.totals.calls == len(TYPED) * len(EXAMPLES) == server.requests_total


async def test_only_identical_prompts_are_duplicates(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    typed = ["Be **bold**.", "Be bold.", "be bold.", "Be **bold**.", "", "   "]
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        scorer = engine.model("openai/fake-model", base_url=server.base_url)
        report = await engine.evaluate(typed, EXAMPLES, scorer, grader=AnyGrader())
    assert [s.duplicate_of for s in report.instructions] == [None, None, None, 0, None, 4]
    # Four distinct prompts per example; the repeats cost nothing.
    assert server.requests_total == 4 * len(EXAMPLES)
    assert report.totals.calls == 4 * len(EXAMPLES)


def test_cli_evaluate_sends_the_typed_text(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"input": ex.input, "target": ex.target}) + "\n" for ex in EXAMPLES)
    )
    out = tmp_path / "report.json"
    args = ["--task", str(data), "--scorer", "openai/fake-model", "--out", str(out)]
    for ins in TYPED:
        args += ["--instruction", ins]
    with ServerProcess() as srv:
        args += ["--scorer-base-url", srv.base_url, "--cache-dir", str(tmp_path / "cache")]
        result = subprocess.run(
            [sys.executable, "-m", "opro.cli.main", "evaluate", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ),
        )
        assert result.returncode == 0, result.stderr
        prompts = srv.stats(prompts=True)["prompt_counts"]
    assert set(prompts) == {sent_prompt(ins, ex.input) for ins in TYPED for ex in EXAMPLES}
    report = json.loads(out.read_text())
    assert [e["instruction"] for e in report["instructions"]] == TYPED
    assert [e["duplicate_of"] for e in report["instructions"]] == [None] * len(TYPED)


class Proposer(Provider):
    """An optimizer whose every answer is the same unpolished proposal."""

    name = "scripted"

    def __init__(self, answer: str) -> None:
        super().__init__("optimizer")
        self.answer = answer

    async def complete(self, request: Request) -> Completion:
        texts = (self.answer,) * request.n
        return Completion(texts, Usage(10, 10 * request.n), ("stop",) * request.n)

    @property
    def supports_n(self) -> bool:
        return True


async def test_optimizer_proposals_are_polished_and_deduplicated(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    task = load_task("synthetic/boolean_expressions", size=30)
    train = split(task).train
    raw = "[  **think** about   each operator\nin turn  ]"
    polished = "Think about each operator in turn"
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        scorer = engine.model("openai/fake-model", base_url=server.base_url)
        optimizer = Model(
            Proposer(raw),
            limiter=ConnectionLimiter(LimitConfig()),
            retry=engine.retry,
            cache=engine.cache,
        )
        problem = PromptProblem(engine, scorer, task)
        cfg = OptimizeConfig(steps=2, candidates_per_step=3, test_top=0)
        await optimize(problem, optimizer, cfg, run_dir=tmp_path / "run")
    # Only the empty start and the polished proposal were ever sent, each once per example.
    expected = {ex.input for ex in train}
    expected |= {sent_prompt(polished, ex.input) for ex in train}
    assert set(server.prompt_counts) == expected
    assert all(count == 1 for count in server.prompt_counts.values())
    records = read_steps(tmp_path / "run" / "steps.jsonl")[0]
    step1, step2 = records[1]["candidates"], records[2]["candidates"]
    assert [c["canonical"] for c in step1] == [polished] * 3
    assert [c["status"] for c in step1] == ["new", "duplicate", "duplicate"]
    assert {c["status"] for c in step2} == {"duplicate"}
    assert step1[0]["text"] == raw.strip("[]")


# What the paper's polishing makes of the first: before, both were scored as the second.
TYPED_STARTS = ["be **bold**:  think\nfirst ", "Be bold: think first"]


async def test_optimize_scores_typed_starting_instructions_verbatim(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    task = load_task("synthetic/boolean_expressions", size=30)
    train = split(task).train
    proposal = "Check each operator"
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        scorer = engine.model("openai/fake-model", base_url=server.base_url)
        optimizer = Model(
            Proposer(f"[{proposal}]"),
            limiter=ConnectionLimiter(LimitConfig()),
            retry=engine.retry,
            cache=engine.cache,
        )
        problem = PromptProblem(engine, scorer, task, starting=[*TYPED_STARTS, "   "])
        cfg = OptimizeConfig(steps=1, candidates_per_step=1, test_top=0)
        await optimize(problem, optimizer, cfg, run_dir=tmp_path / "run")
    # Each typed start reached the scorer byte for byte (a blank one as the empty
    # instruction), and the optimizer's proposal as polished; each once per example.
    scored = [*TYPED_STARTS, "", proposal]
    assert set(server.prompt_counts) == {
        sent_prompt(ins, ex.input) if ins else ex.input for ins in scored for ex in train
    }
    assert all(count == 1 for count in server.prompt_counts.values())
    # The record shows the text that was scored.
    start = read_steps(tmp_path / "run" / "steps.jsonl")[0][0]["candidates"]
    assert [(c["text"], c["canonical"], c["status"]) for c in start] == [
        (TYPED_STARTS[0], TYPED_STARTS[0], "start"),
        (TYPED_STARTS[1], TYPED_STARTS[1], "start"),
        ("", "", "start"),
    ]


def test_cli_optimize_sends_the_typed_start(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"input": ex.input, "target": ex.target}) + "\n" for ex in EXAMPLES)
    )
    args = ["--task", str(data), "--scorer", "openai/fake-model", "--optimizer", "simulated/o"]
    args += ["--steps", "0", "--test-top", "0", "--train-fraction", "1"]
    args += ["--start", TYPED_STARTS[0], "--run-dir", str(tmp_path / "run")]
    with ServerProcess() as srv:
        args += ["--scorer-base-url", srv.base_url, "--cache-dir", str(tmp_path / "cache")]
        result = subprocess.run(
            [sys.executable, "-m", "opro.cli.main", "optimize", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ),
        )
        assert result.returncode == 0, result.stderr
        prompts = srv.stats(prompts=True)["prompt_counts"]
    assert set(prompts) == {sent_prompt(TYPED_STARTS[0], ex.input) for ex in EXAMPLES}
