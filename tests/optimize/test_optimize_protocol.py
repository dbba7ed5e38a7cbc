"""The paper's protocol in the OPRO loop: extraction failures, missed examples, presets.

The scorer is `simulated/...` (deterministic); the optimizer is a scripted test `Provider`
whose answers are fixed strings, so what each step extracts is known in advance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from opro.engine.engine import Engine
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Decoding, Model
from opro.optimize.loop import OptimizationResult, OptimizeConfig, optimize
from opro.optimize.metaprompt import MetaPromptConfig
from opro.optimize.plan import plan_optimization
from opro.optimize.problem import PromptProblem
from opro.optimize.protocol import protocol_preset
from opro.optimize.runlog import RunDirError, read_steps
from opro.providers.base import Provider
from opro.providers.types import Completion, Request, Usage
from opro.tasks import load_task, split

TASK = load_task("synthetic/boolean_expressions", size=60)
TRAIN = split(TASK).train
START = "Check each operator."


class Scripted(Provider):
    """Answers every request with the same list of answers (one per sample)."""

    name = "scripted"

    def __init__(self, answers: Sequence[str], model: str = "optimizer") -> None:
        super().__init__(model)
        self.answers = list(answers)

    async def complete(self, request: Request) -> Completion:
        texts = tuple(self.answers[i % len(self.answers)] for i in range(request.n))
        return Completion(texts, Usage(100, 10 * len(texts)), ("stop",) * len(texts))

    @property
    def supports_n(self) -> bool:
        return True


async def run(
    tmp_path: Path,
    answers: Sequence[str],
    *,
    optimizer: str = "optimizer",
    scorer: str = "simulated/scorer",
    resume: bool = False,
    problem_kw: dict[str, Any] | None = None,
    **cfg: Any,
) -> tuple[OptimizationResult, Model]:
    cfg.setdefault("steps", 2)
    cfg.setdefault("candidates_per_step", len(answers))
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        scoring = engine.model(scorer)
        problem = PromptProblem(engine, scoring, TASK, starting=[START], **(problem_kw or {}))
        opt = Model(
            Scripted(answers, optimizer),
            limiter=ConnectionLimiter(LimitConfig()),
            retry=engine.retry,
            cache=engine.cache,
            decoding=Decoding(max_tokens=64),
        )
        result = await optimize(
            problem, opt, OptimizeConfig(**cfg), run_dir=tmp_path / "run", resume=resume
        )
    return result, scoring


def records(tmp_path: Path) -> list[dict[str, Any]]:
    """The records as the JSON they are (the tests pin the public format)."""
    return cast(list[dict[str, Any]], read_steps(tmp_path / "run" / "steps.jsonl")[0])


ANSWERS = ["Sure: [Be brief.]", "no brackets here", "", "[]"]
PAPERISH = MetaPromptConfig(extraction="reference")


@pytest.mark.parametrize(("extraction", "failures"), [("lenient", 1), ("reference", 3)])
async def test_extraction_failures_are_counted_and_never_scored(
    tmp_path: Path, extraction: str, failures: int
) -> None:
    meta = MetaPromptConfig(extraction=extraction)  # type: ignore[arg-type]
    _, first = await run(tmp_path, ANSWERS, steps=1, meta=meta, test_top=0)
    result, second = await run(tmp_path, ANSWERS, resume=True, meta=meta, test_top=0)
    steps = records(tmp_path)
    assert [r.get("extraction_failures") for r in steps] == [None, failures, failures]
    for record in steps[1:]:
        misses = [c for c in record["candidates"] if c.get("reason") == "no candidate"]
        assert len(misses) == failures
        assert all(c["text"] == "" and "score" not in c for c in misses)
    # Counted across the resume, as the state is rebuilt from the records.
    assert (result.extraction_failures, result.answers) == (2 * failures, 8)
    saved = orjson.loads((tmp_path / "run" / "results.json").read_bytes())
    assert (saved["extraction_failures"], saved["answers"]) == (2 * failures, 8)
    summary = (tmp_path / "run" / "summary.txt").read_text()
    assert f"extraction failures: {2 * failures} of 8 optimizer answers" in summary
    # The empty instruction is never scored for a failed extraction (the reference would).
    scored = {h.solution for h in result.history}
    assert "" not in scored
    lenient_extra = {"No brackets here"} if extraction == "lenient" else set()
    assert scored == {START, "Be brief.", *lenient_extra}
    assert first.stats.calls + second.stats.calls == len(scored) * len(TRAIN)


async def test_the_examples_each_instruction_missed_are_recorded(tmp_path: Path) -> None:
    await run(tmp_path, ["[Be brief.]", "[Think first.]"], steps=1, test_top=0)
    scored = [c for r in records(tmp_path) for c in r["candidates"] if "detail" in c]
    assert len(scored) == 3
    for c in scored:
        wrong, detail = c["detail"]["wrong"], c["detail"]
        assert wrong == sorted(set(wrong)) and all(0 <= i < len(TRAIN) for i in wrong)
        assert len(wrong) == detail["graded"] - detail["correct"] and c["errors"] == 0


async def test_accumulative_rule_shows_only_examples_missed_before(tmp_path: Path) -> None:
    pool = [f"[{w} carefully.]" for w in ("Read", "Work", "Look", "Think", "Go", "Check")]
    meta = MetaPromptConfig(exemplar_selection="accumulative_most_frequent", exemplars=3)
    await run(tmp_path, pool, steps=3, candidates_per_step=2, meta=meta, test_top=0)
    ids = [ex.id or str(i) for i, ex in enumerate(TRAIN)]
    missed: set[str] = set()
    steps = records(tmp_path)
    for record in steps:
        assert set(record.get("exemplars", ())) <= missed
        if record["step"] > 0:
            assert len(record["exemplars"]) == min(3, len(missed)) > 0
        for c in record["candidates"]:
            missed.update(ids[i] for i in c.get("detail", {}).get("wrong", ()))


async def test_the_paper_preset_through_the_library(tmp_path: Path) -> None:
    paper = protocol_preset("paper")
    answers = ["<INS>Be brief.</INS>", "Sure, here it is."]  # gpt style: no tags = whole answer
    result, _ = await run(
        tmp_path,
        answers,
        steps=1,
        optimizer="gpt-4o",
        scorer="simulated/gpt-4o-mini",
        meta=paper.meta,
        protocol="paper",
        problem_kw={"qa_framing": paper.qa_framing},
        test_top=0,
    )
    config = orjson.loads((tmp_path / "run" / "config.json").read_bytes())["run"]
    meta = config["options"]["meta"]
    assert config["options"]["protocol"] == "paper"
    assert (meta["style"], meta["max_shown"], meta["min_score"]) == ("gpt", 20, 0.3)
    assert (meta["extraction"], meta["exemplar_selection"]) == ("reference", "random")
    assert config["problem"]["qa_framing"] is False
    step = records(tmp_path)[1]
    assert step["meta_prompt"].startswith("Your job is to write the instruction <INS>.")
    assert {h.solution for h in result.history} == {START, "Be brief.", "Sure, here it is."}
    assert (
        "protocol: paper (the paper's reference settings)"
        in (tmp_path / "run" / "summary.txt").read_text()
    )


async def test_prompt_problems_frame_only_where_the_position_needs_it() -> None:
    async with Engine(use_cache=False) as engine:
        scorer = engine.model("simulated/x")
        assert PromptProblem(engine, scorer, TASK).qa_framing is False
        assert PromptProblem(engine, scorer, TASK, position="A_begin").qa_framing is True
        assert PromptProblem(engine, scorer, TASK, qa_framing=True).qa_framing is True


async def test_the_dry_run_plans_an_uncapped_listing_as_it_grows() -> None:
    async with Engine(use_cache=False) as engine:
        scorer = engine.model("simulated/x")
        optimizer = engine.model("simulated/optimizer")
        problem = PromptProblem(engine, scorer, TASK)

        def planned(max_shown: int | None, steps: int) -> int:
            meta = MetaPromptConfig(style="pretrained", max_shown=max_shown)
            cfg = OptimizeConfig(steps=steps, candidates_per_step=8, meta=meta)
            return plan_optimization(problem, optimizer, cfg)[1].worst_tokens_in

        # Capped: every step at the cap. Uncapped: step s lists 1 + 8 (s - 1) solutions, so
        # short runs plan less than the cap of 20 and long runs more.
        assert planned(None, 2) < planned(20, 2)
        assert planned(None, 100) > 5 * planned(20, 100)
        growth = [planned(None, s + 1) - planned(None, s) for s in (10, 20, 40)]
        assert growth[0] < growth[1] < growth[2]


async def test_a_run_logged_before_the_protocol_options_still_resumes(tmp_path: Path) -> None:
    answers = ["[Be brief.]", "[Think first.]"]
    await run(tmp_path, answers, steps=1, test_top=0)
    path = tmp_path / "run" / "config.json"
    config = orjson.loads(path.read_bytes())
    del config["run"]["options"]["protocol"]  # as written before these options existed
    del config["run"]["options"]["meta"]["exemplar_selection"]
    del config["run"]["options"]["meta"]["extraction"]
    path.write_bytes(orjson.dumps(config))
    result, _ = await run(tmp_path, answers, resume=True, test_top=0)
    assert result.steps_completed == 2
    # A setting that would change what such a run did is still refused.
    with pytest.raises(RunDirError, match=r"options\.meta\.extraction was None there"):
        await run(tmp_path, answers, steps=3, resume=True, test_top=0, meta=PAPERISH)
