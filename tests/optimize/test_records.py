"""Typed step records (`optimize.records`): one module writes and checks them, from the types.

The check of a steps.jsonl line is derived from the `TypedDict`s the loop writes, so a field
the loop writes cannot escape it: an unknown status, or an optional field of the wrong type
(which resume used to add up or count, crashing or miscounting), is a one-line error that
names the field.
"""

from __future__ import annotations

import asyncio
import json
import typing
from pathlib import Path
from typing import Any

import pytest

from opro.engine.engine import Engine
from opro.optimize.loop import OptimizeConfig, optimize
from opro.optimize.problem import PromptProblem
from opro.optimize.records import StepRecord, step_record_problem
from opro.optimize.runlog import RunDirError, read_steps
from opro.tasks import load_task

TASK = load_task("synthetic/boolean_expressions", size=40)


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The records of a short run with validation checks, as the JSON it wrote."""
    root = tmp_path_factory.mktemp("records")

    async def main() -> None:
        async with Engine(cache_dir=root / "cache") as engine:
            scorer, optimizer = engine.model("simulated/s"), engine.model("simulated/o")
            problem = PromptProblem(engine, scorer, TASK, validation_fraction=0.2)
            cfg = OptimizeConfig(steps=3, candidates_per_step=3, eval_every=1, test_top=0)
            await optimize(problem, optimizer, cfg, run_dir=root / "run")

    asyncio.run(main())
    text = (root / "run" / "steps.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_every_record_a_run_writes_has_the_declared_types(lines: list[dict[str, Any]]) -> None:
    assert len(lines) == 4
    declared = set(typing.get_type_hints(StepRecord))
    for record in lines:
        assert step_record_problem(record) is None
        assert set(record) <= declared  # the loop writes nothing the types do not declare
    # A step with a validation check writes them all (`spend` only when a ledger records it;
    # the EvoPrompt fields only under those strategies, see tests/optimize/test_evoprompt.py).
    assert set(lines[1]) == declared - {"spend", "meta_prompts", "parents", "population"}


def _bad(record: dict[str, Any], path: list[str | int], value: object) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(record))
    target: Any = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (["candidates", 0, "status"], "bogus", "candidates[0].status: 'bogus' is not one of"),
        (["answers"], "three", "answers: 'three' is not a list"),
        (["answers"], [1, 2], "answers[0]: 1 is not a string"),
        (["extraction_failures"], "2", "extraction_failures: '2' is not an integer"),
        (["optimizer", "calls"], -1, "optimizer.calls: -1 is negative"),
        (["spend"], {"calls": 1, "tokens_in": 2, "tokens_out": 3}, "spend.cost_usd is missing"),
        (["candidates", 0, "detail"], [], "candidates[0].detail: [] is not an object"),
        (["validation", "reused"], "no", "validation.reused: 'no' is not true or false"),
        (["kind"], "restart", "kind: 'restart' is not one of 'start', 'optimize'"),
    ],
)
def test_a_field_of_the_wrong_type_is_named(
    lines: list[dict[str, Any]], path: list[str | int], value: object, named: str
) -> None:
    problem = step_record_problem(_bad(lines[1], path, value))
    assert problem is not None and problem.startswith(named), problem


def test_every_declared_field_is_checked(lines: list[dict[str, Any]]) -> None:
    """Derived from the types: every declared key holding a value of no declared shape fails."""
    record = lines[1]
    for key in typing.get_type_hints(StepRecord):
        problem = step_record_problem({**record, key: [{"not": "right"}]})
        assert problem is not None and problem.startswith(key), key


def test_resume_refuses_a_count_that_is_text_in_one_line(
    lines: list[dict[str, Any]], tmp_path: Path
) -> None:
    path = tmp_path / "steps.jsonl"
    bad = _bad(lines[1], ["extraction_failures"], "2")  # resume would add "2" to a count
    path.write_text("\n".join(json.dumps(r) for r in [lines[0], bad, *lines[2:]]) + "\n")
    with pytest.raises(RunDirError) as info:
        read_steps(path)
    message = str(info.value)
    assert f"{path} line 2 is not a step record (extraction_failures:" in message
    assert "\n" not in message
