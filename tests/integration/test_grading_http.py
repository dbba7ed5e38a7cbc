"""Both accuracies and truncated answers, end to end over HTTP to the fake OpenAI server.

Every answer is graded by the strict rules (`accuracy`) and by the paper's reference rules
(`accuracy_reference`); `grading` picks the one that ranks instructions. Answers the server cut
at max_tokens (finish_reason "length") are counted, also when they come from the cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import opro
from opro.engine.engine import Engine, TaskGrader
from opro.engine.evaluate import evaluate
from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig

EXAMPLES = [opro.Example(f"Is {i} even?", "Yes" if i % 2 == 0 else "No") for i in range(12)]
TRUTH = {ex.input: ex.target for ex in EXAMPLES}
GOOD = "Answer with care."  # always right
BRIEF = "Be brief."  # right on the first four questions, "Maybe" on the rest
HEDGE = "Hedge."  # "I cannot tell.": wrong, but the reference finds "no" inside "cannot"
RAMBLE = "Ramble."  # a long answer that the 8-token limit cuts before its verdict


def responder(prompt: str) -> str:
    question = next(q for q in TRUTH if q in prompt)
    if GOOD in prompt:
        return f"The answer is {TRUTH[question]}."
    if BRIEF in prompt:
        return TRUTH[question] if int(question.split()[1]) < 4 else "Maybe"
    if HEDGE in prompt:
        return "I cannot tell."
    return "Let me think about this for a long while first. " * 3 + TRUTH[question]


async def run(
    server: FakeOpenAIServer, cache: Path, instructions: list[str], **kw: object
) -> opro.EvalReport:
    async with Engine(cache_dir=cache) as engine:
        scorer = engine.model(
            "openai/fake-model", base_url=server.base_url, decoding=opro.Decoding(max_tokens=8)
        )
        return await engine.evaluate(instructions, EXAMPLES, scorer, **kw)  # type: ignore[arg-type]


async def test_both_accuracies_and_truncated_answers_fresh_and_cached(tmp_path: Path) -> None:
    async with FakeOpenAIServer(FakeServerConfig(responder=responder)) as server:
        for _ in range(2):  # the second run is served from the cache alone
            report = await run(server, tmp_path / "cache", [GOOD, BRIEF, HEDGE, RAMBLE])
            rows = [
                (s.accuracy, s.accuracy_reference, s.correct, s.correct_reference, s.truncated)
                for s in report.instructions
            ]
            assert rows == [
                (1.0, 1.0, 12, 12, 0),
                (pytest.approx(4 / 12), pytest.approx(4 / 12), 4, 4, 0),
                (0.0, 0.5, 0, 6, 0),
                (0.0, 0.0, 0, 0, 12),
            ]
            assert report.grader_version == opro.TaskGrader().version
            assert report.reference_grader_version == TaskGrader("reference").version
        assert server.requests_total == 48
    saved = report.to_dict()
    assert saved["grading"] == "strict"
    assert {"accuracy", "accuracy_reference", "correct_reference", "truncated"} <= set(
        saved["instructions"][0]
    )


async def test_grading_picks_the_accuracy_that_ranks(tmp_path: Path) -> None:
    async with FakeOpenAIServer(FakeServerConfig(responder=responder)) as server:
        strict = await run(server, tmp_path / "cache", [BRIEF, HEDGE])
        reference = await run(server, tmp_path / "cache", [BRIEF, HEDGE], grading="reference")
    assert strict.best().instruction == BRIEF  # 33% strict vs 0%
    assert reference.best().instruction == HEDGE  # 50% by the reference vs 33%
    assert reference.grading == "reference"
    # The same answers, graded the same way: only the ranking differs.
    assert [s.accuracy for s in strict.instructions] == [s.accuracy for s in reference.instructions]


async def test_ranking_by_reference_needs_a_reference_grader(tmp_path: Path) -> None:
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        scorer = engine.model("simulated/x")
        with pytest.raises(ValueError, match="reference_grader"):
            await evaluate(["x"], EXAMPLES, scorer, grader=TaskGrader(), grading="reference")
        with pytest.raises(ValueError, match="strict, reference"):
            await engine.evaluate(["x"], EXAMPLES, scorer, grading="lenient")  # type: ignore[arg-type]
        report = await evaluate(["x"], EXAMPLES, scorer, grader=TaskGrader())
    assert report.instructions[0].accuracy_reference is None
    assert report.reference_grader_version is None
