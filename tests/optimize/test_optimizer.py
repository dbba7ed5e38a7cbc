"""The OPRO loop on the `simulated` scorer with a scripted optimizer: logging, dedup, resume.

The optimizer is a tiny test-only `Provider` whose answers are a pure function of the
meta-prompt (and the sample index), so runs are reproducible and a resumed run can be
compared with an uninterrupted one record by record.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

import opro
from opro.engine.engine import Engine
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Decoding, Model
from opro.engine.spend import Spend
from opro.optimize.candidates import check, extract
from opro.optimize.loop import OptimizationResult, OptimizeConfig, optimize, step_seed
from opro.optimize.metaprompt import MetaPrompt, MetaPromptConfig, Scored, build_meta_prompt
from opro.optimize.problem import PromptProblem, SolutionScore, SplitName
from opro.optimize.runlog import RunDirError, read_steps
from opro.providers.base import Provider
from opro.providers.types import Completion, Request, Usage
from opro.tasks import load_task, split

POOL = [
    "Evaluate carefully.",
    "Check every operator.",
    "Answer with True or False.",
    "Work from the inside out.",
    "Read the whole expression.",
    "Simplify step by step.",
]
Script = Callable[[str, int], str]


def pool_script(prompt: str, sample: int) -> str:
    h = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
    return f"Here is my text: [{POOL[(h + sample) % len(POOL)]}]"


class ScriptedOptimizer(Provider):
    """Answers with `script(prompt, sample index)`; records every request it gets."""

    name = "scripted"

    def __init__(self, script: Script = pool_script, *, n: bool = True) -> None:
        super().__init__("optimizer")
        self.script = script
        self.n = n
        self.requests: list[Request] = []

    async def complete(self, request: Request) -> Completion:
        self.requests.append(request)
        texts = tuple(self.script(request.as_text(), i) for i in range(request.n))
        return Completion(texts, Usage(100, 10 * len(texts)), ("stop",) * len(texts))

    @property
    def supports_n(self) -> bool:
        return self.n


def optimizer_model(engine: Engine, provider: Provider) -> Model:
    return Model(
        provider,
        limiter=ConnectionLimiter(LimitConfig()),
        retry=engine.retry,
        cache=engine.cache,
        decoding=Decoding(max_tokens=64),
    )


TASK = load_task("synthetic/boolean_expressions", size=60)
TRAIN_SIZE = len(split(TASK).train)


async def run(
    tmp_path: Path,
    cache: str = "cache",
    *,
    provider: ScriptedOptimizer | None = None,
    run_dir: Path | None = None,
    resume: bool = False,
    problem_kw: dict[str, Any] | None = None,
    **cfg: Any,
) -> tuple[OptimizationResult, Model, ScriptedOptimizer]:
    provider = provider or ScriptedOptimizer()
    cfg.setdefault("steps", 3)
    cfg.setdefault("candidates_per_step", 4)
    async with Engine(cache_dir=tmp_path / cache) as engine:
        scorer = engine.model("simulated/scorer")
        problem = PromptProblem(engine, scorer, TASK, **(problem_kw or {}))
        result = await optimize(
            problem,
            optimizer_model(engine, provider),
            OptimizeConfig(**cfg),
            run_dir=run_dir,
            resume=resume,
        )
    return result, scorer, provider


VOLATILE = {"wall_s", "calls", "cache_hits", "tokens_in", "tokens_out", "cost_usd", "totals"}


def stable(value: Any) -> Any:
    """A record without what legitimately differs between runs (timing, what was paid)."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def steps_of(run_dir: Path) -> list[dict[str, Any]]:
    """The records as the JSON they are (the tests pin the public format)."""
    return cast(list[dict[str, Any]], read_steps(run_dir / "steps.jsonl")[0])


async def test_every_step_and_candidate_is_logged(tmp_path: Path) -> None:
    result, scorer, provider = await run(tmp_path, run_dir=tmp_path / "run", test_top=0)
    records = steps_of(tmp_path / "run")
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert records[0]["kind"] == "start" and records[0]["candidates"][0]["status"] == "start"
    new = 0
    for record in records[1:]:
        assert record["seed"] == step_seed(0, record["step"])
        assert len(record["answers"]) == 4 and len(record["exemplars"]) == 3
        assert record["meta_prompt"].endswith("Write the text in square brackets.")
        for c in record["candidates"]:
            assert c["status"] in {"new", "duplicate", "rejected", "surplus"}
            assert c["canonical"] in POOL
            if c["status"] == "new":
                new += 1
                assert c["calls"] == TRAIN_SIZE and 0.0 <= c["score"] <= 1.0
            if c["status"] == "duplicate":
                assert "calls" not in c and c["score"] is not None
    # Every distinct instruction was scored once on every training example, never again.
    assert scorer.stats.calls == (new + 1) * TRAIN_SIZE
    assert len(provider.requests) == 3 and all(r.n == 4 for r in provider.requests)
    assert result.best is not None and result.steps_completed == 3
    assert (tmp_path / "run" / "results.json").is_file()
    summary = (tmp_path / "run" / "summary.txt").read_text()
    assert "best on train" in summary and result.final == []


async def test_a_repeated_proposal_reuses_its_score(tmp_path: Path) -> None:
    provider = ScriptedOptimizer(lambda prompt, i: "[Evaluate carefully.]")
    result, scorer, _ = await run(tmp_path, provider=provider, run_dir=tmp_path / "run", test_top=0)
    records = steps_of(tmp_path / "run")
    first = records[1]["candidates"]
    assert [c["status"] for c in first] == ["new", "duplicate", "duplicate", "duplicate"]
    assert all(c["score"] == first[0]["score"] for c in first)
    for record in records[2:]:
        assert {c["status"] for c in record["candidates"]} == {"duplicate"}
        assert {c["duplicate_of_step"] for c in record["candidates"]} == {1}
    assert len(result.history) == 2
    assert scorer.stats.calls == 2 * TRAIN_SIZE  # "" and the one proposal, each scored once


async def test_messy_answers_are_vetted_and_recorded(tmp_path: Path) -> None:
    answers = [
        "",  # empty answer
        "[Add 2 and 3 first.] [Keep going.]",  # a digit (forbidden below), then a good one
        "no markup at all",
        "[" + "x" * 600 + "]",
    ]
    provider = ScriptedOptimizer(lambda prompt, i: answers[i])
    await run(
        tmp_path,
        provider=provider,
        run_dir=tmp_path / "run",
        steps=1,
        problem_kw={"forbid_digits": True},
    )
    candidates = steps_of(tmp_path / "run")[1]["candidates"]
    summary = [(c.get("canonical"), c["status"], c.get("reason")) for c in candidates]
    assert summary == [
        ("Add 2 and 3 first.", "rejected", "contains a digit"),
        ("No markup at all", "new", None),
        ("X" + "x" * 599, "rejected", "longer than 500 characters"),
        ("Keep going.", "new", None),
        (None, "rejected", "no candidate"),
    ]


async def test_extra_candidates_beyond_n_are_surplus(tmp_path: Path) -> None:
    many = " ".join(f"[{p}]" for p in POOL)
    provider = ScriptedOptimizer(lambda prompt, i: many)
    await run(tmp_path, provider=provider, run_dir=tmp_path / "run", steps=1, candidates_per_step=2)
    statuses = [c["status"] for c in steps_of(tmp_path / "run")[1]["candidates"]]
    # Two answers with six candidates each: the first two of each are new or duplicates of
    # each other; everything after the cap is surplus.
    assert statuses[:4] == ["new", "duplicate", "new", "duplicate"]
    assert statuses[4:] == ["surplus"] * 8


async def test_a_server_without_n_gets_single_calls(tmp_path: Path) -> None:
    provider = ScriptedOptimizer(n=False)
    await run(tmp_path, provider=provider, steps=2)
    assert len(provider.requests) == 8 and {r.n for r in provider.requests} == {1}


async def test_same_seed_same_run_and_other_seed_other_exemplars(tmp_path: Path) -> None:
    await run(tmp_path, "c1", run_dir=tmp_path / "a")
    await run(tmp_path, "c2", run_dir=tmp_path / "b")
    await run(tmp_path, "c3", run_dir=tmp_path / "c", seed=1)
    a, b, c = (steps_of(tmp_path / name) for name in "abc")
    assert stable(a) == stable(b)
    assert [r.get("exemplars") for r in a] != [r.get("exemplars") for r in c]


async def test_linear_temperature_schedule(tmp_path: Path) -> None:
    provider = ScriptedOptimizer()
    await run(tmp_path, provider=provider, run_dir=tmp_path / "run", steps=4, temperature_end=2.0)
    assert [r.temperature for r in provider.requests] == [1.0, 1.25, 1.5, 1.75]
    assert [r["temperature"] for r in steps_of(tmp_path / "run")[1:]] == [1.0, 1.25, 1.5, 1.75]


async def test_resume_matches_an_uninterrupted_run_and_repays_nothing(tmp_path: Path) -> None:
    straight, straight_scorer, _ = await run(tmp_path, "c1", run_dir=tmp_path / "a", steps=5)

    # The interrupted run: two steps, then a crash inside step 3's optimizer call.
    _, first_scorer, _ = await run(tmp_path, "c2", run_dir=tmp_path / "b", steps=2)

    def broken(prompt: str, sample: int) -> str:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        await run(
            tmp_path, "c2", provider=ScriptedOptimizer(broken), run_dir=tmp_path / "b",
            resume=True, steps=5,
        )  # fmt: skip
    # A torn half-line, as a crash during the append would leave.
    log = tmp_path / "b" / "steps.jsonl"
    log.write_bytes(log.read_bytes() + b'{"step": 3, "kind": "optim')
    resumed, resumed_scorer, provider = await run(
        tmp_path, "c2", run_dir=tmp_path / "b", resume=True, steps=5
    )
    assert stable(steps_of(tmp_path / "b")) == stable(steps_of(tmp_path / "a"))
    assert stable(resumed.to_dict()) == stable(straight.to_dict())
    assert len(provider.requests) == 3  # steps 3-5 only: steps 1-2 came from the log
    # Nothing was scored twice: the two halves together paid what the straight run paid.
    paid = first_scorer.stats.calls + resumed_scorer.stats.calls
    assert paid == straight_scorer.stats.calls
    assert (tmp_path / "b" / "steps.jsonl").read_bytes().endswith(b"}\n")


async def test_resuming_a_finished_run_makes_no_calls(tmp_path: Path) -> None:
    first, _, _ = await run(tmp_path, run_dir=tmp_path / "run")
    again, scorer, provider = await run(tmp_path, run_dir=tmp_path / "run", resume=True)
    assert provider.requests == [] and scorer.stats.calls == 0
    assert stable(again.to_dict()) == stable(first.to_dict())


async def test_resume_refuses_changed_settings_but_allows_more_steps(tmp_path: Path) -> None:
    await run(tmp_path, run_dir=tmp_path / "run", steps=1)
    with pytest.raises(RunDirError, match=r"options\.candidates_per_step was 4 there but is 5"):
        await run(tmp_path, run_dir=tmp_path / "run", resume=True, candidates_per_step=5)
    with pytest.raises(RunDirError, match=r"problem\.position"):
        await run(tmp_path, run_dir=tmp_path / "run", resume=True, problem_kw={"position": "Q_end"})
    result, _, _ = await run(tmp_path, run_dir=tmp_path / "run", resume=True, steps=2)
    assert result.steps_completed == 2
    await run(tmp_path, run_dir=tmp_path / "lin", steps=1, temperature_end=2.0)
    with pytest.raises(RunDirError, match=r"options\.steps"):
        await run(tmp_path, run_dir=tmp_path / "lin", resume=True, steps=2, temperature_end=2.0)


async def test_a_used_run_dir_is_refused_without_resume(tmp_path: Path) -> None:
    await run(tmp_path, run_dir=tmp_path / "run", steps=0)
    with pytest.raises(RunDirError, match="already holds a run; pass --resume"):
        await run(tmp_path, run_dir=tmp_path / "run", steps=0)
    with pytest.raises(RunDirError, match="nothing to resume"):
        await run(tmp_path, run_dir=tmp_path / "empty", resume=True)


async def test_final_table_has_top_solutions_and_baselines_on_every_split(tmp_path: Path) -> None:
    result, _, _ = await run(
        tmp_path, problem_kw={"validation_fraction": 0.2, "test_limit": 10}, test_top=2
    )
    roles = [row.role for row in result.final]
    assert roles[:2] == ["top 1", "top 2"]
    assert roles[2:] == ["start", "baseline"] or "start" not in roles[2:]
    assert result.final[-1].solution == "Let's think step by step."
    for row in result.final:
        assert row.train is not None and row.validation is not None and row.test is not None
    best = result.best
    assert best is not None and result.final[0].solution == best.solution


class WordProblem:
    """A non-prompt problem: score = share of TARGET words in the phrase (or its negative)."""

    TARGET = frozenset({"evaluate", "check", "carefully", "every", "operator"})

    def __init__(self, *, higher_is_better: bool = True, validation_score: float = 0.5) -> None:
        self.higher_is_better = higher_is_better
        self.validation_score = validation_score
        self.scored: list[tuple[SplitName, str]] = []

    @property
    def splits(self) -> frozenset[SplitName]:
        return frozenset({"train", "validation", "test"})

    def describe(self) -> dict[str, Any]:
        return {"kind": "words", "higher": self.higher_is_better}

    def initial_solutions(self) -> list[str]:
        return ["Start."]

    def baselines(self) -> list[str]:
        return ["Start.", "Check."]

    def meta_prompt(
        self, history: Sequence[Scored], cfg: MetaPromptConfig, rng: random.Random
    ) -> MetaPrompt:
        from opro.optimize.metaprompt import InstructionPart

        part = InstructionPart(())
        return build_meta_prompt(history, part, cfg, rng, higher_is_better=self.higher_is_better)

    def parse(self, answer: str, cfg: MetaPromptConfig) -> list[str]:
        return extract(answer, cfg.style)

    def check(self, candidate: str) -> tuple[str, str | None]:
        return check(candidate)

    async def score(self, solutions: Sequence[str], split: SplitName) -> list[SolutionScore]:
        out = []
        for s in solutions:
            self.scored.append((split, s))
            words = {w.strip(".").lower() for w in s.split()}
            value = len(words & self.TARGET) / len(self.TARGET)
            if split == "validation":
                value = self.validation_score
            out.append(
                SolutionScore(
                    value if self.higher_is_better else -value, spend=Spend(calls=1), detail={}
                )
            )
        return out


async def run_words(
    tmp_path: Path, problem: WordProblem, **cfg: Any
) -> tuple[OptimizationResult, ScriptedOptimizer]:
    provider = ScriptedOptimizer()
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        result = await optimize(
            problem,
            optimizer_model(engine, provider),
            OptimizeConfig(**cfg),
            run_dir=tmp_path / "r",
        )
    return result, provider


async def test_validation_every_k_steps_and_early_stopping(tmp_path: Path) -> None:
    problem = WordProblem()
    result, provider = await run_words(
        tmp_path, problem, steps=10, candidates_per_step=2, eval_every=2, patience=2
    )
    records = steps_of(tmp_path / "r")
    # Checks at steps 0, 2, 4: the first sets the bar, the next two do not beat it.
    assert [r["step"] for r in records if r["validation"] is not None] == [0, 2, 4]
    assert result.stopped_early and result.steps_completed == 4
    assert len(provider.requests) == 4
    assert "validation stopped improving" in (tmp_path / "r" / "summary.txt").read_text()
    validated = [s for split, s in problem.scored if split == "validation"]
    assert len(validated) == len(set(validated))  # a best already checked is not re-scored


async def test_a_lower_is_better_problem(tmp_path: Path) -> None:
    problem = WordProblem(higher_is_better=False)
    result, _ = await run_words(tmp_path, problem, steps=3, candidates_per_step=3, test_top=1)
    assert result.best is not None
    assert result.best.score == min(h.score for h in result.history)
    assert result.final[0].role == "top 1" and result.final[0].solution == result.best.solution


async def test_settings_that_need_validation_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="early stopping needs validation"):
        await run(tmp_path, patience=2)
    with pytest.raises(ValueError, match="validation"):
        await run(tmp_path, select_by="validation")


def test_the_library_api_is_exported() -> None:
    assert opro.optimize is optimize
    assert opro.OptimizeConfig is OptimizeConfig
    assert opro.PromptProblem is PromptProblem
    assert "optimize" in opro.__all__


def test_results_json_is_plain_json(tmp_path: Path) -> None:
    # results.json must stay readable by tools that know nothing of this package.
    import asyncio

    asyncio.run(run(tmp_path, run_dir=tmp_path / "run", steps=1))
    data = orjson.loads((tmp_path / "run" / "results.json").read_bytes())
    assert {"best", "solutions", "final", "steps_completed", "stopped_early", "totals", "run"} <= (
        data.keys()
    )
    config = orjson.loads((tmp_path / "run" / "config.json").read_bytes())
    assert config["run"]["options"]["candidates_per_step"] == 4


async def test_paper_defaults_for_gsm8k_and_bbh(data_dir: Path) -> None:
    async with Engine(use_cache=False) as engine:
        scorer = engine.model("simulated/scorer")
        gsm = PromptProblem(engine, scorer, load_task("gsm8k", data_dir=data_dir))
        bbh = PromptProblem(engine, scorer, load_task("bbh/navigate", data_dir=data_dir))
    assert gsm.initial_solutions() == ["Let's solve the problem."]
    assert gsm.baselines() == ["Let's solve the problem.", "Let's think step by step."]
    assert (len(gsm.data.train), len(gsm.test_examples)) == (261, 1319)
    assert gsm.check("Add the 2 numbers.")[1] == "contains a digit"
    assert gsm.part.task_description == "grade school math"
    assert bbh.initial_solutions() == [""] and bbh.check("Add the 2 numbers.")[1] is None
    assert (len(bbh.data.train), bbh.part.task_description) == (50, "navigate")


async def test_changed_data_refuses_resume(tmp_path: Path) -> None:
    global TASK
    await run(tmp_path, run_dir=tmp_path / "run", steps=0)
    saved, TASK = TASK, load_task("synthetic/boolean_expressions", size=60, seed=1)
    try:
        with pytest.raises(RunDirError, match=r"problem\.test\.sha was"):
            await run(tmp_path, run_dir=tmp_path / "run", resume=True, steps=0)
    finally:
        TASK = saved
